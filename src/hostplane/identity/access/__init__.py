"""Who may act on one resource: ownership, global grants and per-resource grants."""
