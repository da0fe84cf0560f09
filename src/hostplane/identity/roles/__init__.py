"""Roles: named sets of permission strings."""
