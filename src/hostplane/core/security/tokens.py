"""Access tokens: JWTs signed with Ed25519 (EdDSA), published as a JWKS.

A :class:`KeyRing` holds the one key that signs and every key that still
verifies. Rotation adds a new signing key and keeps the old one verifying
until the tokens it signed have expired. Verified tokens are cached until
they expire: one EdDSA verification costs about as much as a database round
trip, and clients reuse a token for many requests.
"""

from __future__ import annotations

import base64
import json
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from hostplane.core.clock import utcnow

ALGORITHM = "EdDSA"
_CACHE_SIZE = 10_000
# Clock skew tolerated between replicas and agents.
LEEWAY_SECONDS = 30


class TokenInvalid(Exception):
    """Tampered, expired, signed by an unknown key, or not a token at all."""


@dataclass(frozen=True, slots=True)
class SigningKey:
    kid: str
    public_key: Ed25519PublicKey
    private_key: Ed25519PrivateKey | None = None
    # After this a retired key no longer verifies (its tokens have expired).
    not_after: datetime | None = None

    @classmethod
    def generate(cls, kid: str) -> SigningKey:
        private = Ed25519PrivateKey.generate()
        return cls(kid=kid, public_key=private.public_key(), private_key=private)

    def private_bytes(self) -> bytes:
        if self.private_key is None:
            raise ValueError("verification-only key")
        return self.private_key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())

    def public_bytes(self) -> bytes:
        return self.public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)

    @classmethod
    def from_bytes(
        cls, kid: str, *, private: bytes | None, public: bytes, not_after: datetime | None = None
    ) -> SigningKey:
        private_key = Ed25519PrivateKey.from_private_bytes(private) if private else None
        return cls(
            kid=kid,
            public_key=Ed25519PublicKey.from_public_bytes(public),
            private_key=private_key,
            not_after=not_after,
        )

    def jwk(self) -> dict[str, str]:
        x = base64.urlsafe_b64encode(self.public_bytes()).rstrip(b"=").decode()
        return {
            "kty": "OKP",
            "crv": "Ed25519",
            "x": x,
            "kid": self.kid,
            "alg": ALGORITHM,
            "use": "sig",
        }


class KeyRing:
    def __init__(self, keys: list[SigningKey], *, issuer: str) -> None:
        signing = [key for key in keys if key.private_key is not None and key.not_after is None]
        if len(signing) != 1:
            raise ValueError(f"a key ring needs exactly one active signing key, got {len(signing)}")
        self.signing_key = signing[0]
        self.issuer = issuer
        self._keys = {key.kid: key for key in keys}
        self._verified: OrderedDict[str, dict[str, Any]] = OrderedDict()

    @property
    def kids(self) -> list[str]:
        return list(self._keys)

    def sign(self, claims: dict[str, Any]) -> str:
        payload = {"iss": self.issuer, **claims}
        if self.signing_key.private_key is None:  # excluded by __init__; keeps the type precise
            raise ValueError("the signing key has no private part")
        return jwt.encode(
            payload,
            self.signing_key.private_key,
            algorithm=ALGORITHM,
            headers={"kid": self.signing_key.kid},
        )

    def verify(self, token: str) -> dict[str, Any]:
        """The claims of a valid token; raises :class:`TokenInvalid` otherwise."""
        cached = self._verified.get(token)
        now = utcnow().timestamp()
        if cached is not None:
            if cached["exp"] + LEEWAY_SECONDS > now:
                self._verified.move_to_end(token)
                return cached
            del self._verified[token]
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError as exc:
            raise TokenInvalid("malformed token") from exc
        key = self._keys.get(str(header.get("kid")))
        if key is None:
            raise TokenInvalid("signed by an unknown key")
        if key.not_after is not None and key.not_after.timestamp() + LEEWAY_SECONDS < now:
            raise TokenInvalid("signed by a retired key")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.public_key,
                algorithms=[ALGORITHM],
                issuer=self.issuer,
                leeway=LEEWAY_SECONDS,
                # Expiry is checked below against hostplane's clock, the one
                # source of "now" (tests move it; PyJWT would read the OS clock).
                options={
                    "require": ["exp", "iat", "sub"],
                    "verify_aud": False,
                    "verify_exp": False,
                    "verify_iat": False,
                },
            )
        except jwt.InvalidTokenError as exc:
            raise TokenInvalid(str(exc)) from exc
        if not isinstance(claims.get("exp"), int | float) or claims["exp"] + LEEWAY_SECONDS <= now:
            raise TokenInvalid("expired")
        self._verified[token] = claims
        if len(self._verified) > _CACHE_SIZE:
            self._verified.popitem(last=False)
        return claims

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        now = utcnow()
        return {
            "keys": [
                key.jwk()
                for key in self._keys.values()
                if key.not_after is None or key.not_after > now
            ]
        }


def token_kid(token: str) -> str | None:
    """The ``kid`` header of a token, unverified; None when it is not a JWT."""
    try:
        kid = jwt.get_unverified_header(token).get("kid")
    except jwt.InvalidTokenError:
        return None
    return str(kid) if kid is not None else None


def unverified_claims(token: str) -> dict[str, Any]:
    """Claims without checking the signature: only to pick which issuer to verify with."""
    try:
        payload = token.split(".")[1]
        decoded: dict[str, Any] = json.loads(
            base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
        )
    except (IndexError, ValueError) as exc:
        raise TokenInvalid("malformed token") from exc
    return decoded
