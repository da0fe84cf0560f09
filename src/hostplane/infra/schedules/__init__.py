"""Scheduled tasks: cron-timed power actions, commands and backups on a server."""
