"""Database plumbing: engine, sessions, declarative base, column types."""
