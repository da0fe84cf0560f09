"""The plan catalogue: what servers are bought on."""
