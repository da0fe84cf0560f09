"""Password hashing and, later, token signing."""
