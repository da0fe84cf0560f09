from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Computed, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from hostplane.core.db.base import Base, IdMixin, TimestampMixin
from hostplane.core.db.tenancy import TenantScoped

EMAIL_INDEX = "uq_users_tenant_id_email_key"
USERNAME_INDEX = "uq_users_tenant_id_username_key"


class User(IdMixin, TenantScoped, TimestampMixin, Base):
    __tablename__ = "users"
    # Unique per tenant whatever the case ("Jo" and "jo" are one name): the
    # database decides, so two concurrent sign-ups cannot both win.
    # Generated columns rather than expression indexes: the migration is
    # generated from the models, and expression indexes do not survive that.
    __table_args__ = (
        UniqueConstraint("tenant_id", "email_key", name=EMAIL_INDEX),
        UniqueConstraint("tenant_id", "username_key", name=USERNAME_INDEX),
    )

    email: Mapped[str] = mapped_column(String(320))
    username: Mapped[str] = mapped_column(String(64))
    email_key: Mapped[str] = mapped_column(String(320), Computed("lower(email)", persisted=True))
    username_key: Mapped[str] = mapped_column(
        String(64), Computed("lower(username)", persisted=True)
    )
    password_hash: Mapped[str | None] = mapped_column(String(255))
    first_name: Mapped[str | None] = mapped_column(String(100))
    last_name: Mapped[str | None] = mapped_column(String(100))
    # active | banned | disabled
    status: Mapped[str] = mapped_column(String(16), default="active")
    ban_reason: Mapped[str | None] = mapped_column(String(500))
    banned_at: Mapped[datetime | None] = mapped_column()
    last_login_at: Mapped[datetime | None] = mapped_column()
    # Two-factor: the sealed TOTP secret (pending until confirmed), when it was
    # confirmed, and the last time step accepted (a code works once).
    totp_secret_sealed: Mapped[str | None] = mapped_column(Text)
    totp_enabled_at: Mapped[datetime | None] = mapped_column()
    totp_last_step: Mapped[int | None] = mapped_column(BigInteger)

    @property
    def two_factor_enabled(self) -> bool:
        return self.totp_enabled_at is not None

    @property
    def display_name(self) -> str:
        full = " ".join(part for part in (self.first_name, self.last_name) if part)
        return full or self.username
