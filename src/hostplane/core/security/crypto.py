"""Encrypting secrets at rest (signing keys, provider credentials, TOTP seeds).

A key derived from the installation's ``secret_key`` with HKDF seals values
with AES-256-GCM. Each purpose gets its own derived key, so a value sealed
for one purpose cannot be opened as another.
"""

from __future__ import annotations

import base64
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_VERSION = b"\x01"
_NONCE_BYTES = 12


class SealError(ValueError):
    """A sealed value that is corrupt, or sealed under another key or purpose."""


class SecretBox:
    def __init__(self, secret_key: str, purpose: str) -> None:
        key = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=b"hostplane-secretbox", info=purpose.encode()
        ).derive(secret_key.encode())
        self._aead = AESGCM(key)
        self._purpose = purpose.encode()

    def seal(self, plaintext: bytes) -> str:
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, plaintext, self._purpose)
        return base64.urlsafe_b64encode(_VERSION + nonce + sealed).decode()

    def open(self, token: str) -> bytes:
        try:
            raw = base64.urlsafe_b64decode(token.encode())
        except (ValueError, TypeError) as exc:
            raise SealError("not a sealed value") from exc
        if raw[:1] != _VERSION or len(raw) < 1 + _NONCE_BYTES + 16:
            raise SealError("not a sealed value")
        try:
            return self._aead.decrypt(
                raw[1 : 1 + _NONCE_BYTES], raw[1 + _NONCE_BYTES :], self._purpose
            )
        except InvalidTag as exc:
            raise SealError("sealed under another key or purpose, or altered") from exc
