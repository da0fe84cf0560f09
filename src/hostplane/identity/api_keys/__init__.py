"""API keys: long-lived credentials for bots and scripts, scoped to part of their creator's rights."""
