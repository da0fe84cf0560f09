"""mPanel's system routes: aggregated host metrics and the queue's event log."""
