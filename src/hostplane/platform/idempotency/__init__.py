"""``Idempotency-Key`` for POSTs that move money or create billable things.

The same key and body replays the first answer; the same key with another
body is 409 ``IDEMPOTENCY_KEY_REUSED``. Routers use :func:`replayable`.
"""
