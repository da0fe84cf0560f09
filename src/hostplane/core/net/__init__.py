"""Network helpers shared by every outbound call the panel makes for a tenant."""
