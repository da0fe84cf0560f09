"""User rules: creating accounts with valid, unique emails and strong-enough passwords."""

from __future__ import annotations

import re

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.core.errors import ValidationFailed
from hostplane.core.ids import new_id
from hostplane.core.security.passwords import hash_password
from hostplane.identity.roles.service import assign_role
from hostplane.identity.users.models import User

MIN_PASSWORD_LENGTH = 8
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_USERNAME = re.compile(r"^[A-Za-z0-9_.-]{3,64}$")


class EmailTaken(ValidationFailed):
    code = "EMAIL_TAKEN"


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
        select(User.email).where(
            User.tenant_id == tenant_id,
            or_(User.email == email, func.lower(User.username) == username.lower()),
        )
    )
    if clash is not None:
        raise EmailTaken("Email already exists" if clash == email else "Username already exists")
    user = User(
        tenant_id=tenant_id, email=email, username=username, password_hash=hash_password(password)
    )
    session.add(user)
    await session.flush()
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
