"""Opaque, time-sortable identifiers.

A ULID-style id: 48 bits of milliseconds since the epoch and 80 random bits,
written as 26 lower-case Crockford base32 characters. Ids created later sort
later (within one process strictly, even within the same millisecond), so
``ORDER BY id`` is creation order and B-tree inserts stay append-mostly.
"""

from __future__ import annotations

import secrets
import threading
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
_RANDOM_BITS = 80
_RANDOM_MAX = (1 << _RANDOM_BITS) - 1
ID_LENGTH = 26

_lock = threading.Lock()
_last_ms = -1
_last_random = 0


def _encode(value: int, length: int) -> str:
    chars = []
    for _ in range(length):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def new_id() -> str:
    """A new 26-character id, greater than every id this process made before."""
    global _last_ms, _last_random
    with _lock:
        now_ms = time.time_ns() // 1_000_000
        if now_ms <= _last_ms:
            # Same (or an earlier, after a clock step back) millisecond: keep
            # the previous timestamp and count up so the order stays strict.
            now_ms = _last_ms
            random_part = _last_random + 1
            if random_part > _RANDOM_MAX:
                now_ms += 1
                random_part = secrets.randbits(_RANDOM_BITS - 1)
        else:
            # Leave headroom below the maximum so counting up never overflows
            # in practice.
            random_part = secrets.randbits(_RANDOM_BITS - 1)
        _last_ms, _last_random = now_ms, random_part
    return _encode((now_ms << _RANDOM_BITS) | random_part, ID_LENGTH)


def is_id(value: str) -> bool:
    """Whether ``value`` has the shape of an id made by :func:`new_id`."""
    return len(value) == ID_LENGTH and all(c in _ALPHABET for c in value)
