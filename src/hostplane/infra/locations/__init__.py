"""Locations: where nodes stand (a region, a data centre)."""
