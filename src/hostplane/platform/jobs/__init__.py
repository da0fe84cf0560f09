"""Durable background work: a jobs table, workers that claim rows, retries with backoff."""
