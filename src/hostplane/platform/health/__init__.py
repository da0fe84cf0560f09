"""Liveness, readiness and metrics for load balancers and monitoring."""
