"""A server's plan term: deploy, renew, upgrade, expiry."""
