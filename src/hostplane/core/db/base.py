"""The declarative base every table derives from."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import MetaData, String
from sqlalchemy.ext.asyncio import AsyncAttrs
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from hostplane.core.clock import utcnow
from hostplane.core.db.types import JSONDocument, UTCDateTime
from hostplane.core.ids import ID_LENGTH, new_id

# Named constraints: Alembic's batch mode on SQLite can only alter what it can
# name, and names that follow one pattern make migrations predictable.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

IdString = String(ID_LENGTH)


class Base(AsyncAttrs, DeclarativeBase):
    """Declarative base with UTC datetimes and JSON documents mapped by annotation."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {  # noqa: RUF012 - SQLAlchemy reads this class attribute
        datetime: UTCDateTime(),
        dict[str, Any]: JSONDocument,
        list[Any]: JSONDocument,
    }


class IdMixin:
    """An opaque, time-sortable string primary key."""

    id: Mapped[str] = mapped_column(IdString, primary_key=True, default=new_id)


class TimestampMixin:
    """``created_at`` and ``updated_at`` in UTC, maintained by the ORM."""

    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
