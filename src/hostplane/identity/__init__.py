"""Who may do what: users, roles, API keys, tenants."""
