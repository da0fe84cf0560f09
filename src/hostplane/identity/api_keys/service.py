"""API key rules: issuing keys within the creator's rights, revoking them, and
recognising a presented key.

A key reads ``hp_<public id>_<secret>``. The public id finds the row and is
what listings show; the secret (256 random bits) is kept only as its SHA-256,
so the full key exists only in the response that created it. A key's rights
are never stored as granted: every use intersects its scopes with what its
creator holds at that moment, so taking a role away from a person narrows
their keys at once, and banning them stops their keys.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import re
import secrets
import string
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import structlog
from sqlalchemy import CursorResult, Select, or_, select, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from hostplane.core.clock import utcnow
from hostplane.core.errors import Forbidden, NotFound, ValidationFailed
from hostplane.core.pagination import PageMeta, PageParams, paginate
from hostplane.core.principal import Principal, permission_matches
from hostplane.identity.access.events import announce_revoked
from hostplane.identity.api_keys.models import (
    KEY_PREFIX,
    PUBLIC_ID_LENGTH,
    ApiKey,
    ApiKeyStatus,
)
from hostplane.identity.permissions import catalogue
from hostplane.identity.roles.service import effective_permissions
from hostplane.identity.users.models import User

log = structlog.get_logger(__name__)

_PUBLIC_ID_ALPHABET = string.ascii_lowercase + string.digits
_SECRET_BYTES = 32  # 256 bits
_SECRET_LENGTH = 52  # unpadded base32 of 32 bytes
_KEY_SHAPE = re.compile(
    rf"{KEY_PREFIX}([a-z0-9]{{{PUBLIC_ID_LENGTH}}})_([a-z2-7]{{{_SECRET_LENGTH}}})"
)
_PUBLIC_ID_ATTEMPTS = 3
LAST_USED_INTERVAL = timedelta(minutes=1)


class ApiKeyNotFound(NotFound):
    def __init__(self, key_id: str) -> None:
        # NotFound's own message would read "Api key not found".
        super(NotFound, self).__init__(
            "API key not found", details={"resource": "api_key", "id": key_id}
        )


@dataclass(frozen=True, slots=True)
class IssuedApiKey:
    """A new key's row and its full text, which exists only until the response is sent."""

    api_key: ApiKey
    key: str


def effective_scopes(scopes: Iterable[str], granted: Iterable[str]) -> frozenset[str]:
    """What a key with ``scopes`` may do for a creator who holds ``granted``.

    Both sides may hold wildcards, so this is the intersection of the sets of
    permissions each side covers, written back as permission strings. Two
    patterns (``*``, ``a.*``, ``a.b``) either nest or do not overlap at all,
    so each pair contributes the narrower one or nothing:

    - scopes ``server.*``, creator ``server.start``, ``file.read`` -> ``server.start``
    - scopes ``server.start``, creator ``*`` -> ``server.start``
    - scopes ``*``, creator ``server.*`` -> ``server.*``
    """
    held = frozenset(granted)
    covered: set[str] = set()
    for scope in scopes:
        if any(permission_matches(permission, scope) for permission in held):
            covered.add(scope)
        else:
            covered.update(
                permission for permission in held if permission_matches(scope, permission)
            )
    # Drop entries another entry already covers ("server.start" beside "server.*").
    return frozenset(
        permission
        for permission in covered
        if not any(
            other != permission and permission_matches(other, permission) for other in covered
        )
    )


def _hash_secret(secret: str) -> str:
    # SHA-256, not a password hash: the secret is 256 random bits, so there is
    # nothing to guess, and a deliberately slow hash (Argon2) would only add its
    # cost to every API request. Slow hashes are for secrets people choose.
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


def _new_public_id() -> str:
    return "".join(secrets.choice(_PUBLIC_ID_ALPHABET) for _ in range(PUBLIC_ID_LENGTH))


def _new_secret() -> str:
    # Lower-case base32: no "-" or "_" inside, so a double-click selects the
    # whole key and nothing in it can be mistaken for the separators.
    raw = base64.b32encode(secrets.token_bytes(_SECRET_BYTES)).decode("ascii")
    return raw.rstrip("=").lower()


def _clean_name(name: str) -> str:
    cleaned = name.strip()
    if not cleaned:
        raise ValidationFailed(
            "The key needs a name",
            details={"fields": [{"field": "name", "message": "must not be blank"}]},
        )
    return cleaned


def _clean_scopes(scopes: Sequence[str]) -> list[str]:
    """The scopes deduplicated and in catalogue form; 400 for unknown permission strings."""
    try:
        return catalogue.validate(scopes)
    except ValidationFailed as exc:
        # The same refusal, pointed at this request's field.
        details = exc.details if isinstance(exc.details, dict) else {}
        fields = [{**field, "field": "scopes"} for field in details.get("fields", [])] or [
            {"field": "scopes", "message": exc.message}
        ]
        raise ValidationFailed(exc.message, details={**details, "fields": fields}) from exc


def _creator_lacks(principal: Principal, scope: str) -> bool:
    if principal.has(scope):
        return False
    # Every user holds the server-level permissions on what they own (and on
    # servers shared with them), so a key may carry those without a role
    # granting them: at use, its global rights are the scopes intersected
    # with the creator's roles, and the scopes only cap what ownership and
    # per-server grants already allow. Without this a customer could not
    # give a bot "server.start" for their own server.
    covered = catalogue.expand(scope)
    return not covered or not all(permission.is_server_level for permission in covered)


def _clean_allowed_ips(values: Sequence[str]) -> list[str]:
    cleaned: list[str] = []
    invalid: list[dict[str, str]] = []
    for index, value in enumerate(values):
        text = value.strip()
        try:
            entry = (
                str(ipaddress.ip_network(text, strict=True))
                if "/" in text
                else str(ipaddress.ip_address(text))
            )
        except ValueError:
            invalid.append({"field": f"allowedIps.{index}", "message": _ip_problem(text)})
            continue
        if entry not in cleaned:
            cleaned.append(entry)
    if invalid:
        raise ValidationFailed(
            "Invalid entries in allowedIps: " + "; ".join(item["message"] for item in invalid),
            details={"fields": invalid},
        )
    return cleaned


def _ip_problem(text: str) -> str:
    try:
        network = ipaddress.ip_network(text, strict=False)
    except ValueError:
        return f"{text!r} is not an IP address or CIDR network"
    # "10.0.0.5/8": refused rather than silently widened to the whole network.
    return f"{text!r} has host bits set; the network is {network}"


def _ip_allowed(ip: str | None, allowed: Sequence[str]) -> bool:
    if ip is None:
        return False
    try:
        address: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    # A dual-stack listener reports IPv4 clients as ::ffff:a.b.c.d; they must
    # match the IPv4 entries an operator wrote.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in ipaddress.ip_network(entry) for entry in allowed)


async def create_api_key(
    session: AsyncSession,
    principal: Principal,
    *,
    name: str,
    scopes: Sequence[str],
    expires_at: datetime | None = None,
    allowed_ips: Sequence[str] = (),
) -> IssuedApiKey:
    """Issue a key that acts for ``principal`` with at most ``principal``'s rights.

    Only a user acting as themselves may create keys: a key that could mint
    keys would let a leaked key outlive its own revocation. Each scope must be
    covered by the creator's global permissions, or be server-level (what
    every user holds on the servers they own or share). 400 for a blank name,
    scopes not in the permission catalogue, an expiry that is not in the
    future or an ``allowed_ips`` entry that is not an address or network; 403
    naming the scopes the creator lacks.
    """
    if principal.kind == "api_key":
        raise Forbidden("An API key cannot create API keys")
    if principal.kind != "user" or principal.user_id is None or principal.tenant_id is None:
        raise Forbidden("API keys are created by a signed-in user")
    name = _clean_name(name)
    cleaned_scopes = _clean_scopes(scopes)
    if expires_at is not None and expires_at <= utcnow():
        raise ValidationFailed(
            "The expiry must be in the future",
            details={"fields": [{"field": "expiresAt", "message": "must be in the future"}]},
        )
    if expires_at is not None:
        # Stored and shown in UTC, like every other time, whatever zone it came in.
        expires_at = expires_at.astimezone(UTC)
    networks = _clean_allowed_ips(allowed_ips)
    missing = [scope for scope in cleaned_scopes if _creator_lacks(principal, scope)]
    if missing:
        raise Forbidden(
            "A key cannot have permissions its creator lacks: " + ", ".join(missing),
            details={"missing": missing},
        )
    creator_status = await session.scalar(select(User.status).where(User.id == principal.user_id))
    if creator_status != "active":
        raise Forbidden("Only an active account can create API keys")

    for _attempt in range(_PUBLIC_ID_ATTEMPTS):
        public_id, secret = _new_public_id(), _new_secret()
        api_key = ApiKey(
            tenant_id=principal.tenant_id,
            name=name,
            public_id=public_id,
            secret_hash=_hash_secret(secret),
            scopes=cleaned_scopes,
            allowed_ips=networks,
            created_by_id=principal.user_id,
            expires_at=expires_at,
        )
        try:
            async with session.begin_nested():
                session.add(api_key)
        except IntegrityError as exc:
            # Another key (of any tenant) already has this public id: draw
            # again. Rare (36^8 ids), so a savepoint per attempt costs nothing.
            if "public_id" not in str(exc.orig):
                raise
            continue
        return IssuedApiKey(api_key=api_key, key=f"{KEY_PREFIX}{public_id}_{secret}")
    raise RuntimeError(f"no free API key id after {_PUBLIC_ID_ATTEMPTS} attempts")


def _listing(*, created_by: str | None, status: ApiKeyStatus | None) -> Select[ApiKey]:
    statement = select(ApiKey).order_by(ApiKey.id.desc())
    if created_by is not None:
        statement = statement.where(ApiKey.created_by_id == created_by)
    now = utcnow()
    if status == "active":
        statement = statement.where(
            ApiKey.revoked_at.is_(None), or_(ApiKey.expires_at.is_(None), ApiKey.expires_at > now)
        )
    elif status == "revoked":
        statement = statement.where(ApiKey.revoked_at.is_not(None))
    elif status == "expired":
        statement = statement.where(ApiKey.revoked_at.is_(None), ApiKey.expires_at <= now)
    return statement


async def list_api_keys(
    session: AsyncSession,
    params: PageParams,
    *,
    created_by: str | None = None,
    status: ApiKeyStatus | None = None,
) -> tuple[Sequence[ApiKey], PageMeta]:
    """The session's tenant's keys, newest first; only ``created_by``'s when given."""
    return await paginate(session, _listing(created_by=created_by, status=status), params)


async def revoke_api_key(
    session: AsyncSession, key_id: str, *, created_by: str | None = None
) -> ApiKey:
    """Revoke a key now; its next request is refused.

    With ``created_by``, another user's key is reported as not found rather
    than forbidden, so key ids of other people reveal nothing. Revoking a
    revoked key changes nothing.
    """
    api_key = await session.scalar(select(ApiKey).where(ApiKey.id == key_id))
    if api_key is None or (created_by is not None and api_key.created_by_id != created_by):
        raise ApiKeyNotFound(key_id)
    if api_key.revoked_at is None:
        api_key.revoked_at = utcnow()
        await session.flush()
        announce_revoked(
            session, reason="api_key_revoked", tenant_id=api_key.tenant_id, api_key_id=api_key.id
        )
    return api_key


async def authenticate_api_key(
    session: AsyncSession, raw_key: str, *, ip: str | None
) -> Principal | None:
    """The caller a presented key stands for, or ``None`` if it is not a live key.

    ``None`` for anything malformed or unknown, a wrong secret, a revoked or
    expired key, a client address outside the key's allowlist, and a creator
    who is gone or not active. The principal's permissions are the key's
    scopes narrowed to what the creator holds now. Nothing is cached: every
    call reads the key, so a revocation applies to the very next request.

    Runs before the caller's tenant is known, so it looks the key up by its
    public id in whatever session it is given (an unscoped one). It records
    ``last_used_at`` at most once a minute, in the caller's transaction.
    """
    match = _KEY_SHAPE.fullmatch(raw_key)
    if match is None:
        return None
    public_id, secret = match[1], match[2]
    row = (
        await session.execute(
            select(ApiKey, User.status)
            .outerjoin(User, User.id == ApiKey.created_by_id)
            .where(ApiKey.public_id == public_id)
            # A session that saw the key before must not answer from its
            # identity map: a revocation since then has to count.
            .execution_options(populate_existing=True)
        )
    ).one_or_none()
    if row is None:
        return None
    api_key, creator_status = row
    # The public id is not secret, so only the secret's comparison must not
    # leak how much of it matched.
    if not hmac.compare_digest(api_key.secret_hash, _hash_secret(secret)):
        return None
    now = utcnow()
    if api_key.revoked_at is not None:
        return None
    if api_key.expires_at is not None and api_key.expires_at <= now:
        return None
    if api_key.allowed_ips and not _ip_allowed(ip, api_key.allowed_ips):
        return None
    creator_id = api_key.created_by_id
    if creator_id is None or creator_status != "active":
        return None
    # A key scoped to an administrative permission holds what it implies too.
    scopes = catalogue.with_implied(api_key.scopes)
    permissions = effective_scopes(scopes, await effective_permissions(session, creator_id))
    await _record_use(session, api_key, now)
    return Principal(
        kind="api_key",
        id=api_key.id,
        tenant_id=api_key.tenant_id,
        permissions=permissions,
        display_name=api_key.name,
        user_id=creator_id,
        # The ceiling for what the key does as its creator beyond global
        # grants (ownership, per-server grants), checked where those are.
        scopes=scopes,
        expires_at=api_key.expires_at.timestamp() if api_key.expires_at else None,
    )


async def _record_use(session: AsyncSession, api_key: ApiKey, now: datetime) -> None:
    # A busy bot authenticates many times a second; one write a minute per key
    # answers "is this key still in use?" without turning every request into a
    # write. The condition in the UPDATE keeps concurrent requests (and other
    # processes) to one write per interval too.
    if api_key.last_used_at is not None and now - api_key.last_used_at < LAST_USED_INTERVAL:
        return
    statement = (
        update(ApiKey)
        .where(
            ApiKey.id == api_key.id,
            or_(ApiKey.last_used_at.is_(None), ApiKey.last_used_at <= now - LAST_USED_INTERVAL),
        )
        .values(last_used_at=now)
        .execution_options(synchronize_session=False)
    )
    try:
        # A savepoint, so that failing to record the use (SQLite refusing to
        # turn a read transaction into a write one while another connection
        # writes, say) leaves the caller's transaction usable.
        async with session.begin_nested():
            result = cast(CursorResult[Any], await session.execute(statement))
    except OperationalError as exc:
        # Bookkeeping: a valid key is not refused because its usage time could
        # not be written this once; the key's next request tries again.
        log.warning("api_keys.last_used_not_recorded", api_key_id=api_key.id, error=str(exc))
        return
    if result.rowcount == 1:
        set_committed_value(api_key, "last_used_at", now)
