"""Time-based one-time passwords (RFC 6238: HMAC-SHA1, 30 s steps, 6 digits).

What every authenticator app speaks. ``verify`` returns the matched time step
so callers can refuse a code that was already used (replay).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import struct
from urllib.parse import quote, urlencode

from hostplane.core.clock import utcnow

STEP_SECONDS = 30
DIGITS = 6
# Accept the previous and next step too: phones' clocks drift.
WINDOW = 1


def new_secret() -> str:
    """A 160-bit secret in base32, as authenticator apps expect."""
    return base64.b32encode(secrets.token_bytes(20)).decode().rstrip("=")


def _counter_code(secret: str, counter: int) -> str:
    key = base64.b32decode(secret + "=" * (-len(secret) % 8), casefold=True)
    digest = hmac.new(key, struct.pack(">Q", counter), hashlib.sha1).digest()
    offset = digest[-1] & 0x0F
    value = struct.unpack(">I", digest[offset : offset + 4])[0] & 0x7FFFFFFF
    return str(value % 10**DIGITS).zfill(DIGITS)


def current_step() -> int:
    return int(utcnow().timestamp()) // STEP_SECONDS


def code_at(secret: str, step: int) -> str:
    return _counter_code(secret, step)


def verify(secret: str, code: str, *, after_step: int | None = None) -> int | None:
    """The time step ``code`` matches, or None. Steps ≤ ``after_step`` never match."""
    code = code.strip().replace(" ", "")
    if len(code) != DIGITS or not code.isdigit():
        return None
    now = current_step()
    for step in range(now - WINDOW, now + WINDOW + 1):
        if after_step is not None and step <= after_step:
            continue
        if hmac.compare_digest(_counter_code(secret, step), code):
            return step
    return None


def provisioning_uri(secret: str, *, account: str, issuer: str) -> str:
    """The ``otpauth://`` URI a QR code carries."""
    query = urlencode(
        {"secret": secret, "issuer": issuer, "digits": DIGITS, "period": STEP_SECONDS}
    )
    return f"otpauth://totp/{quote(issuer)}:{quote(account)}?{query}"
