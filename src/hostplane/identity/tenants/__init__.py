"""Tenants: the boundary of every customer-owned row."""
