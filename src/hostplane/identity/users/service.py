"""User rules: creating accounts with valid, unique emails and strong-enough passwords."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.core.clock import utcnow
from hostplane.core.errors import Conflict, Forbidden, NotFound, ValidationFailed
from hostplane.core.ids import new_id
from hostplane.core.pagination import PageMeta, PageParams, paginate
from hostplane.core.principal import Principal
from hostplane.core.security.passwords import hash_password, verify_password
from hostplane.identity.access.events import announce_revoked
from hostplane.identity.roles.service import (
    assert_not_last_owner,
    assign_role,
    assign_role_as,
    revoke_role,
    role_names_for,
    roles_and_permissions,
    roles_by_user,
)
from hostplane.identity.users.models import EMAIL_INDEX, USERNAME_INDEX, User
from hostplane.platform.webhooks.service import emit

MIN_PASSWORD_LENGTH = 8
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_USERNAME = re.compile(r"^[A-Za-z0-9_.-]{3,64}$")


class EmailTaken(Conflict):
    """409: the email or username belongs to another account of the tenant
    (whatever the case); ``details.fields`` names which."""

    def __init__(self, field: str) -> None:
        super().__init__(
            f"{field.capitalize()} already exists",
            details={"fields": [{"field": field, "message": "already taken"}]},
        )


async def _flush_unique(session: AsyncSession) -> None:
    """Flush a new or renamed account; a unique index the check before lost
    to a concurrent writer becomes the same 409 as the check's."""
    try:
        async with session.begin_nested():
            await session.flush()
    except IntegrityError as exc:
        message = str(exc.orig)
        if USERNAME_INDEX in message or "username_key" in message:
            raise EmailTaken("username") from None
        if EMAIL_INDEX in message or "email_key" in message:
            raise EmailTaken("email") from None
        raise


def webhook_data(user: User) -> dict[str, Any]:
    """The ``data`` of ``user.created`` (no secrets, no password hash)."""
    return {"id": user.id, "email": user.email, "username": user.username, "status": user.status}


def like_pattern(search: str) -> str:
    """``%search%`` with ``\\``, ``%`` and ``_`` matching themselves (escape ``\\``)."""
    escaped = search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def default_username(email: str) -> str:
    """A valid username from the email's local part ("jo@x.io" -> "jo_4k2")."""
    local = re.sub(r"[^A-Za-z0-9_.-]", "", email.split("@", 1)[0])[:48]
    return local if len(local) >= 3 else f"{local or 'user'}_{new_id()[-4:]}"


def normalise_email(email: str) -> str:
    return email.strip().lower()


def check_password_strength(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValidationFailed(
            f"Password too weak (min {MIN_PASSWORD_LENGTH} characters)",
            details={
                "fields": [
                    {"field": "password", "message": f"at least {MIN_PASSWORD_LENGTH} characters"}
                ]
            },
        )


async def create_user(
    session: AsyncSession,
    *,
    tenant_id: str,
    email: str,
    password: str,
    username: str | None = None,
    role: str | None = None,
) -> User:
    """Create an account; 400 for a bad email, weak password or taken name."""
    email = normalise_email(email)
    if not _EMAIL.match(email):
        raise ValidationFailed(
            "Invalid email format",
            details={"fields": [{"field": "email", "message": "not an email address"}]},
        )
    check_password_strength(password)
    username = username or default_username(email)
    if not _USERNAME.match(username):
        raise ValidationFailed(
            "Invalid username (3-64 letters, digits, '.', '_' or '-')",
            details={"fields": [{"field": "username", "message": "invalid username"}]},
        )
    clash = await session.scalar(
        select(func.lower(User.email)).where(
            User.tenant_id == tenant_id,
            or_(func.lower(User.email) == email, func.lower(User.username) == username.lower()),
        )
    )
    if clash is not None:
        raise EmailTaken("email" if clash == email else "username")
    user = User(
        tenant_id=tenant_id, email=email, username=username, password_hash=hash_password(password)
    )
    session.add(user)
    await _flush_unique(session)
    emit(session, "user.created", webhook_data(user), tenant_id)
    if role is not None:
        await assign_role(session, user_id=user.id, role_name=role)
    return user


async def set_password(session: AsyncSession, *, email: str, password: str) -> User:
    """Replace an account's password (operators' recovery path)."""
    check_password_strength(password)
    user = await session.scalar(
        select(User).where(User.email == normalise_email(email)).order_by(User.id).limit(1)
    )
    if user is None:
        raise ValidationFailed(f"No account with email {normalise_email(email)}")
    user.password_hash = hash_password(password)
    await session.flush()
    return user


class UserNotFound(NotFound):
    def __init__(self, user_id: str | None = None) -> None:
        super().__init__("user", user_id)


class InvalidCurrentPassword(ValidationFailed):
    code = "INVALID_CURRENT_PASSWORD"


# Which of a user's roles to show as "the" role (SkyPANEL, mPanel show one).
_ROLE_PRECEDENCE = (
    "owner",
    "country-admin",
    "admin",
    "admin-l2",
    "admin-l1",
    "support",
    "customer",
)


def primary_role(names: list[str]) -> str | None:
    for name in _ROLE_PRECEDENCE:
        if name in names:
            return name
    return names[0] if names else None


async def get_user(session: AsyncSession, user_id: str) -> User:
    user = await session.get(User, user_id)
    if user is None:
        raise UserNotFound(user_id)
    return user


async def describe_user(session: AsyncSession, user: User) -> dict[str, Any]:
    """The profile fields every document's "me" and user objects draw from."""
    roles, permissions = await roles_and_permissions(session, user.id)
    return {
        "id": user.id,
        "name": user.display_name,
        "email": user.email,
        "username": user.username,
        "first_name": user.first_name,
        "last_name": user.last_name,
        "role": primary_role(roles),
        "roles": roles,
        "tenant_id": user.tenant_id,
        "permissions": sorted(permissions),
        "two_factor_enabled": user.two_factor_enabled,
        "status": user.status,
        "created_at": user.created_at,
    }


async def update_profile(
    session: AsyncSession,
    user: User,
    *,
    first_name: str | None = None,
    last_name: str | None = None,
    username: str | None = None,
    current_password: str | None = None,
    new_password: str | None = None,
    keep_session: str | None = None,
) -> User:
    """Profile changes; a new password needs the current one and ends other sessions."""
    if first_name is not None:
        user.first_name = first_name.strip() or None
    if last_name is not None:
        user.last_name = last_name.strip() or None
    if username is not None and username != user.username:
        if not _USERNAME.match(username):
            raise ValidationFailed("Invalid username (3-64 letters, digits, '.', '_' or '-')")
        taken = await session.scalar(
            select(User.id).where(
                User.tenant_id == user.tenant_id, func.lower(User.username) == username.lower()
            )
        )
        if taken is not None and taken != user.id:
            raise EmailTaken("username")
        user.username = username
        await _flush_unique(session)
    if new_password is not None:
        if not current_password:
            raise ValidationFailed(
                "currentPassword is required to set a new password",
                details={
                    "fields": [{"field": "currentPassword", "message": "required with newPassword"}]
                },
            )
        if not verify_password(user.password_hash, current_password):
            raise InvalidCurrentPassword("The current password is not correct")
        check_password_strength(new_password)
        user.password_hash = hash_password(new_password)
        from hostplane.identity.auth.sessions import revoke_user_sessions

        await revoke_user_sessions(session, user.id, reason="password_changed", keep=keep_session)
    await session.flush()
    return user


async def list_users(
    session: AsyncSession,
    params: PageParams,
    *,
    search: str | None = None,
    status: str | None = None,
) -> tuple[Sequence[User], PageMeta]:
    """Users of the caller's tenant (the session is tenant-scoped), newest first."""
    statement = select(User).order_by(User.id.desc())
    if search:
        pattern = like_pattern(search.strip().lower())
        statement = statement.where(
            or_(
                func.lower(User.email).like(pattern, escape="\\"),
                func.lower(User.username).like(pattern, escape="\\"),
                func.lower(func.coalesce(User.first_name, "")).like(pattern, escape="\\"),
                func.lower(func.coalesce(User.last_name, "")).like(pattern, escape="\\"),
            )
        )
    if status is not None:
        statement = statement.where(User.status == status)
    return await paginate(session, statement, params)


async def _guard_target(session: AsyncSession, actor_user_id: str | None, target: User) -> None:
    """Nobody bans, disables or deletes themselves; only owners touch owners;
    a tenant never loses its last owner."""
    if actor_user_id == target.id:
        raise Forbidden("You cannot do this to your own account")
    if "owner" in await role_names_for(session, target.id):
        if actor_user_id is None or "owner" not in await role_names_for(session, actor_user_id):
            raise Forbidden("Only an owner can do this to an owner")
        await assert_not_last_owner(session, user_id=target.id)


async def ban_user(
    session: AsyncSession, *, actor_user_id: str | None, user_id: str, reason: str | None
) -> User:
    """Ban an account: it cannot log in, refresh, or use any token it already has."""
    user = await get_user(session, user_id)
    await _guard_target(session, actor_user_id, user)
    if user.status == "banned":
        raise Conflict("The user is already banned")
    user.status = "banned"
    user.ban_reason = reason
    user.banned_at = utcnow()
    from hostplane.identity.auth.sessions import revoke_user_sessions

    await revoke_user_sessions(session, user.id, reason="banned")
    await session.flush()
    return user


async def unban_user(session: AsyncSession, *, actor_user_id: str | None, user_id: str) -> User:
    user = await get_user(session, user_id)
    if user.status != "banned":
        raise Conflict("The user is not banned")
    user.status = "active"
    user.ban_reason = None
    user.banned_at = None
    await session.flush()
    return user


async def update_user(
    session: AsyncSession,
    *,
    actor_user_id: str | None,
    user_id: str,
    name: str | None = None,
    email: str | None = None,
    status: str | None = None,
    password: str | None = None,
) -> User:
    """An operator's edit of another account (mPanel ``PUT /users/:id``)."""
    user = await get_user(session, user_id)
    if name is not None:
        first, _, last = name.strip().partition(" ")
        user.first_name, user.last_name = first or None, last or None
    if email is not None and normalise_email(email) != user.email:
        email = normalise_email(email)
        if not _EMAIL.match(email):
            raise ValidationFailed("Invalid email format")
        if await session.scalar(
            select(User.id).where(User.tenant_id == user.tenant_id, func.lower(User.email) == email)
        ):
            raise EmailTaken("email")
        user.email = email
        await _flush_unique(session)
    if status is not None and status != user.status:
        if status not in ("active", "disabled", "banned"):
            raise ValidationFailed("status must be active, disabled or banned")
        await _guard_target(session, actor_user_id, user)
        user.status = status
        if status != "active":
            from hostplane.identity.auth.sessions import revoke_user_sessions

            await revoke_user_sessions(session, user.id, reason=status)
    if password is not None:
        check_password_strength(password)
        user.password_hash = hash_password(password)
    await session.flush()
    return user


async def set_roles(
    session: AsyncSession, *, actor: Principal, user_id: str, role_names: list[str]
) -> None:
    """The account holds exactly ``role_names`` afterwards (mPanel ``PUT /users/:id``).

    Each grant and removal goes through the role service's rules: nobody hands
    out or takes away a role above their own, and the last owner stays one.
    """
    user = await get_user(session, user_id)
    held = {role.name: role for role in (await roles_by_user(session, [user.id]))[user.id]}
    for name in dict.fromkeys(role_names):
        if name not in held:
            await assign_role_as(session, actor=actor, user_id=user.id, role_name=name)
    for name, role in held.items():
        if name not in role_names:
            await revoke_role(session, actor, user_id=user.id, role_id=role.id)


async def delete_user(session: AsyncSession, *, actor_user_id: str | None, user_id: str) -> None:
    user = await get_user(session, user_id)
    await _guard_target(session, actor_user_id, user)
    await session.delete(user)
    await session.flush()
    announce_revoked(session, reason="deleted", tenant_id=user.tenant_id, user_id=user.id)


async def create_operator_user(
    session: AsyncSession,
    *,
    actor: Principal,
    email: str,
    password: str,
    username: str | None,
    name: str | None,
    roles: list[str],
    status: str,
) -> User:
    """An account created by an operator in their own tenant.

    The operator may only hand out roles whose permissions they hold (the role
    service enforces that when assigning).
    """
    if actor.tenant_id is None:
        raise Forbidden("Only a tenant's operators create its users")
    if status not in ("active", "disabled"):
        raise ValidationFailed("status must be active or disabled")
    user = await create_user(
        session, tenant_id=actor.tenant_id, email=email, password=password, username=username
    )
    if name:
        first, _, last = name.strip().partition(" ")
        user.first_name, user.last_name = first or None, last or None
    user.status = status
    for role_name in roles or ["customer"]:
        await assign_role_as(session, actor=actor, user_id=user.id, role_name=role_name)
    await session.flush()
    return user
