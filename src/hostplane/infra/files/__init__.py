"""A server's files: listing, reading, writing, archives and one-time links."""
