"""One-time links for a file download or upload (QeinTech's signed URLs).

A link carries a token sealed with the installation's secret key
(AES-256-GCM under a key derived for this purpose only, see
:class:`~hostplane.core.security.crypto.SecretBox`): it cannot be forged,
altered, or opened as any other kind of sealed value, and it does not show
the server or path it is bound to. It names the link, the tenant, the server,
the user, the path and the purpose (``download`` or ``upload``), and expires
after :data:`LINK_TTL`.

Using a link inserts its id into ``file_link_uses``, whose primary key
refuses a second insert: a link works once, even when two requests race
with it on different replicas. A download link is spent only once its bytes
are about to flow (the node accepted the request and sent the first chunk),
so a download that fails before that (the node is away, the file is busy)
leaves the link usable for a retry; two concurrent uses both reach that
point, and the key lets exactly one of them through.

At use, the user is loaded again and authorized again on the server, so a
ban, a lost grant or a suspension stops links that are already out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final, Literal

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.core.clock import utcnow
from hostplane.core.db.tenancy import scope_to_tenant
from hostplane.core.errors import Forbidden, HostplaneError, Unauthorized
from hostplane.core.ids import new_id
from hostplane.core.principal import Principal
from hostplane.core.runtime import Runtime
from hostplane.core.security.crypto import SealError, SecretBox
from hostplane.identity.roles.service import effective_permissions, two_factor_required
from hostplane.identity.users import service as users
from hostplane.infra.files.models import FileLinkUse

LinkPurpose = Literal["download", "upload", "backup"]

LINK_TTL: Final = timedelta(minutes=5)
_BOX_PURPOSE: Final = "hostplane.infra.files.link"
# Used rows are pruned this long after their link expired (a used link is
# refused by its expiry from then on; the margin covers clock skew).
_PRUNE_AFTER: Final = timedelta(hours=1)


class InvalidLink(Unauthorized):
    """Not a link of this installation, or one for another server or purpose."""

    code = "INVALID_LINK"

    def __init__(self, message: str = "This link is not valid") -> None:
        super().__init__(message)


class LinkExpired(HostplaneError):
    status = 410
    code = "LINK_EXPIRED"


class LinkUsed(HostplaneError):
    status = 410
    code = "LINK_USED"


@dataclass(frozen=True, slots=True)
class LinkClaims:
    link_id: str
    tenant_id: str
    server_id: str
    user_id: str
    path: str
    purpose: LinkPurpose
    expires_at: datetime
    # An API key's scopes stay the ceiling of what its link may do.
    scopes: tuple[str, ...] | None


def _box(secret_key: str) -> SecretBox:
    return SecretBox(secret_key, _BOX_PURPOSE)


def issue(
    secret_key: str,
    principal: Principal,
    *,
    server_id: str,
    tenant_id: str,
    path: str,
    purpose: LinkPurpose,
) -> tuple[str, datetime]:
    """A sealed token for one use of ``path`` on the server, and when it expires."""
    if principal.user_id is None:
        raise Forbidden("One-time links are issued to users and their API keys")
    expires_at = utcnow() + LINK_TTL
    claims: dict[str, Any] = {
        "id": new_id(),
        "tid": tenant_id,
        "sid": server_id,
        "uid": principal.user_id,
        "path": path,
        "purpose": purpose,
        "exp": int(expires_at.timestamp()),
        "scopes": sorted(principal.scopes) if principal.scopes is not None else None,
    }
    token = _box(secret_key).seal(json.dumps(claims, separators=(",", ":")).encode())
    return token, expires_at.replace(microsecond=0)


def read(secret_key: str, token: str, *, server_id: str, purpose: LinkPurpose) -> LinkClaims:
    """The claims of a link for ``server_id`` and ``purpose``; 401 if it is not one,
    410 if it has expired. Whether it was used is :func:`consume`'s business."""
    try:
        raw = json.loads(_box(secret_key).open(token))
    except (SealError, ValueError) as exc:
        raise InvalidLink() from exc
    if not isinstance(raw, dict):
        raise InvalidLink()
    if raw.get("sid") != server_id or raw.get("purpose") != purpose:
        raise InvalidLink("This link is for another server or another action")
    scopes = raw.get("scopes")
    try:
        claims = LinkClaims(
            link_id=str(raw["id"]),
            tenant_id=str(raw["tid"]),
            server_id=str(raw["sid"]),
            user_id=str(raw["uid"]),
            path=str(raw["path"]),
            purpose=purpose,
            expires_at=datetime.fromtimestamp(int(raw["exp"]), tz=utcnow().tzinfo),
            scopes=tuple(str(s) for s in scopes) if isinstance(scopes, list) else None,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidLink() from exc
    if claims.expires_at <= utcnow():
        raise LinkExpired("This link has expired; ask for a new one")
    return claims


async def consume(session: AsyncSession, claims: LinkClaims) -> None:
    """Mark the link used (410 ``LINK_USED`` if it already was). The caller commits."""
    now = utcnow()
    await session.execute(
        delete(FileLinkUse)
        .where(FileLinkUse.expires_at < now - _PRUNE_AFTER)
        .execution_options(synchronize_session=False)
    )
    session.add(
        FileLinkUse(
            link_id=claims.link_id,
            tenant_id=claims.tenant_id,
            server_id=claims.server_id,
            user_id=claims.user_id,
            purpose=claims.purpose,
            used_at=now,
            expires_at=claims.expires_at,
        )
    )
    try:
        await session.flush()
    except IntegrityError as exc:
        raise LinkUsed("This link has already been used; ask for a new one") from exc


async def ensure_unused(session: AsyncSession, claims: LinkClaims) -> None:
    """410 ``LINK_USED`` now if the link was spent, so a used link does not reach
    the node; the insert in :func:`consume` still decides between racing uses."""
    used = await session.scalar(
        select(FileLinkUse.link_id).where(FileLinkUse.link_id == claims.link_id)
    )
    if used is not None:
        raise LinkUsed("This link has already been used; ask for a new one")


async def spend(runtime: Runtime, claims: LinkClaims) -> None:
    """Consume the link in a transaction of its own, once its bytes are about to
    flow: 410 ``LINK_USED`` if another use got there first."""
    async with runtime.unit_of_work() as session:
        scope_to_tenant(session, claims.tenant_id)
        await consume(session, claims)


async def principal_for(session: AsyncSession, claims: LinkClaims) -> Principal:
    """The link's user as a caller, with the permissions they hold now."""
    try:
        user = await users.get_user(session, claims.user_id)
    except users.UserNotFound as exc:
        raise InvalidLink() from exc
    if user.tenant_id != claims.tenant_id:
        raise InvalidLink()
    if user.status != "active":
        raise Unauthorized("This account is not active", code="ACCOUNT_DISABLED")
    permissions = await effective_permissions(session, user.id)
    if not user.two_factor_enabled and await two_factor_required(session, user.id):
        # As for an access token: nothing is granted until two-factor is set up.
        permissions = frozenset()
    return Principal(
        kind="user",
        id=user.id,
        user_id=user.id,
        tenant_id=user.tenant_id,
        permissions=permissions,
        display_name=user.username,
        scopes=frozenset(claims.scopes) if claims.scopes is not None else None,
    )
