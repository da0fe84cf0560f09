"""Alerts: rules, the alerts they open, and the actions that announce them."""
