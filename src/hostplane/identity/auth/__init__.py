"""Authentication: login, tokens, sessions, two-factor, external identity sync."""
