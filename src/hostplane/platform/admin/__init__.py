"""Operator routes: statistics, detailed health, runtime configuration and maintenance mode."""
