"""Tenant isolation by construction.

Every tenant-owned table mixes in :class:`TenantScoped`. A session scoped to
a tenant (:func:`scope_to_tenant`, done once per request from the caller)
adds ``tenant_id = :tenant`` to every ORM SELECT, UPDATE and DELETE of such
tables, stamps new rows with the tenant, and refuses a row of another tenant
at flush. Domain code never writes the filter by hand, so it cannot forget it.

Sessions that were never scoped (migrations, the CLI, system jobs) see every
tenant: that is the platform's own view.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ForeignKey, event, or_
from sqlalchemy.orm import (
    Mapped,
    ORMExecuteState,
    Session,
    UOWTransaction,
    declared_attr,
    mapped_column,
    with_loader_criteria,
)
from sqlalchemy.orm.attributes import get_history

from hostplane.core.db.base import IdString
from hostplane.core.errors import Forbidden

_TENANT_KEY = "hostplane.tenant_id"


class TenantScoped:
    """Mixin for rows that belong to exactly one tenant."""

    @declared_attr
    def tenant_id(cls) -> Mapped[str]:
        return mapped_column(IdString, ForeignKey("tenants.id", ondelete="CASCADE"), index=True)


class TenantOrShared:
    """Mixin for rows that belong to one tenant, or to none (shared by all).

    Built-in roles are the example: every tenant sees them; a tenant can read
    but never change them.
    """

    @declared_attr
    def tenant_id(cls) -> Mapped[str | None]:
        return mapped_column(
            IdString, ForeignKey("tenants.id", ondelete="CASCADE"), index=True, nullable=True
        )


class CrossTenantWrite(Forbidden):
    code = "CROSS_TENANT"


def scope_to_tenant(session: Session | Any, tenant_id: str | None) -> None:
    """Confine ``session`` (sync or async) to ``tenant_id``; ``None`` leaves it unscoped."""
    target = getattr(session, "sync_session", session)
    if tenant_id is None:
        target.info.pop(_TENANT_KEY, None)
    else:
        target.info[_TENANT_KEY] = tenant_id


def session_tenant(session: Session | Any) -> str | None:
    target = getattr(session, "sync_session", session)
    value = target.info.get(_TENANT_KEY)
    return value if isinstance(value, str) else None


@event.listens_for(Session, "do_orm_execute")
def _filter_reads_and_bulk_writes(state: ORMExecuteState) -> None:
    tenant_id = state.session.info.get(_TENANT_KEY)
    if tenant_id is None or not (state.is_select or state.is_update or state.is_delete):
        return
    if state.is_column_load or state.is_relationship_load:
        return  # the parent row was already filtered
    state.statement = state.statement.options(
        with_loader_criteria(
            TenantScoped, lambda cls: cls.tenant_id == tenant_id, include_aliases=True
        ),
        with_loader_criteria(
            TenantOrShared,
            lambda cls: or_(cls.tenant_id == tenant_id, cls.tenant_id.is_(None)),
            include_aliases=True,
        ),
    )


@event.listens_for(Session, "before_flush")
def _stamp_and_guard_writes(session: Session, _flush: UOWTransaction, _instances: object) -> None:
    tenant_id = session.info.get(_TENANT_KEY)
    if tenant_id is None:
        return
    for obj in session.new:
        if isinstance(obj, TenantScoped | TenantOrShared):
            if obj.tenant_id is None:
                obj.tenant_id = tenant_id
            elif obj.tenant_id != tenant_id:
                raise CrossTenantWrite("That belongs to another tenant")
    for obj in list(session.dirty) + list(session.deleted):
        if isinstance(obj, TenantScoped | TenantOrShared):
            history = get_history(obj, "tenant_id")
            if history.deleted and any(
                old != tenant_id for old in history.deleted if old is not None
            ):
                raise CrossTenantWrite("That belongs to another tenant")
            if obj.tenant_id != tenant_id:
                raise CrossTenantWrite("That belongs to another tenant")
