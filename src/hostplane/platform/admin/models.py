from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from hostplane.core.clock import utcnow
from hostplane.core.db.base import Base, IdString

GLOBAL_KEY = "global"


class PlatformConfig(Base):
    """The runtime configuration operators change without a restart: one row.

    ``overrides`` holds only what an operator set; everything else comes from
    the static settings, so a default changed in the settings file still
    applies to what nobody overrode. ``version`` grows by one per change:
    processes compare it to the copy they hold.
    """

    __tablename__ = "platform_config"

    key: Mapped[str] = mapped_column(String(32), primary_key=True, default=GLOBAL_KEY)
    version: Mapped[int] = mapped_column(Integer, default=0)
    overrides: Mapped[dict[str, Any]] = mapped_column(default=dict)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_by_user_id: Mapped[str | None] = mapped_column(IdString)
