"""Templates: how a kind of server is installed, started and stopped."""
