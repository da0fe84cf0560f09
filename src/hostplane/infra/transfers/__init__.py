"""Moving a server to another node with a real copy of its files."""
