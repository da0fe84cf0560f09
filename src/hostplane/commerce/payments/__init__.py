"""Credit top-ups through payment gateways and the gateways' signed webhooks."""
