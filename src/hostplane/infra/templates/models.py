from __future__ import annotations

from typing import Any

from sqlalchemy import String, Text
from sqlalchemy.orm import Mapped, mapped_column

from hostplane.core.db.base import Base, IdMixin, TimestampMixin
from hostplane.core.db.tenancy import TenantScoped


class Template(IdMixin, TenantScoped, TimestampMixin, Base):
    """How a kind of server is installed, started and stopped (Catalyst's template, Pterodactyl's egg)."""

    __tablename__ = "templates"

    name: Mapped[str] = mapped_column(String(100))
    description: Mapped[str | None] = mapped_column(Text)
    docker_image: Mapped[str] = mapped_column(String(255))
    start_command: Mapped[str] = mapped_column(Text)
    stop_command: Mapped[str | None] = mapped_column(String(255))
    # [{"internal": 25565, "external": 25565}]
    ports: Mapped[list[Any]] = mapped_column(default=list)
    # Values may hold {{VAR}} placeholders, filled from the server's variables.
    environment: Mapped[dict[str, Any]] = mapped_column(default=dict)
    required_variables: Mapped[list[Any]] = mapped_column(default=list)
    # Declared variables in Pterodactyl's egg shape (env_variable, default_value,
    # user_viewable, user_editable, rules): the only names a server may set.
    variables: Mapped[list[Any]] = mapped_column(default=list)
    features: Mapped[dict[str, Any]] = mapped_column(default=dict)
    install_script: Mapped[str | None] = mapped_column(Text)
    install_image: Mapped[str | None] = mapped_column(String(255))
