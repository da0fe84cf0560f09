"""Signed outbound webhooks: endpoints, the events they receive, and their delivery."""
