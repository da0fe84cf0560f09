"""The platform itself: jobs, webhooks, audit, administration, health."""
