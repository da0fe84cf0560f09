"""The permission catalogue: every permission string the platform knows."""
