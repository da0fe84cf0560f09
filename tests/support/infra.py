"""Keyword-only factories for nodes, templates and servers. Each commits.

They call the real services inside a session confined to the tenant (as a
request's would be), so the rows are exactly what the API would write.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.core.clock import utcnow
from hostplane.core.db.tenancy import scope_to_tenant
from hostplane.core.ids import new_id
from hostplane.core.principal import Principal
from hostplane.identity.tenants.models import Tenant
from hostplane.identity.users.models import User
from hostplane.infra.nodes import service as nodes
from hostplane.infra.nodes.models import Node
from hostplane.infra.servers import service as servers
from hostplane.infra.servers.models import Server
from hostplane.infra.templates import service as templates
from hostplane.infra.templates.models import Template

ECHO_TEMPLATE: dict[str, Any] = {
    "name": "Echo",
    "docker_image": "docker.io/library/python:3.12-slim",
    "start_command": "python3 -u echo.py --memory {{MEMORY}}",
    "stop_command": "stop",
    "environment": {"MEMORY": "{{MEMORY}}", "MODE": "test"},
    "required_variables": ["MEMORY"],
}


@asynccontextmanager
async def in_tenant(db: AsyncSession, tenant: Tenant) -> AsyncIterator[AsyncSession]:
    scope_to_tenant(db, tenant.id)
    try:
        yield db
        await db.commit()
    finally:
        scope_to_tenant(db, None)


async def make_node(
    db: AsyncSession,
    *,
    tenant: Tenant,
    online: bool = True,
    max_memory_mb: int = 8192,
    max_cpu_cores: float = 4,
    max_disk_mb: int = 100_000,
    port_range: tuple[int, int] = (30000, 30009),
    name: str | None = None,
) -> tuple[Node, str]:
    """A node and its secret."""
    async with in_tenant(db, tenant):
        node, secret = await nodes.create_node(
            db,
            name=name or f"node-{new_id()[-6:]}",
            hostname="node.example.com",
            public_address="203.0.113.10",
            max_memory_mb=max_memory_mb,
            max_cpu_cores=max_cpu_cores,
            max_disk_mb=max_disk_mb,
            port_range_start=port_range[0],
            port_range_end=port_range[1],
        )
        if online:
            # As if an agent had shaken hands (tests without one get a 503 from
            # any command that needs an answer).
            node.last_seen_at = utcnow()
            node.agent_session_id = new_id()
        else:
            node.last_seen_at = utcnow() - timedelta(minutes=5)
    return node, secret


async def make_template(db: AsyncSession, *, tenant: Tenant, **values: Any) -> Template:
    async with in_tenant(db, tenant):
        return await templates.create_template(db, ECHO_TEMPLATE | values)


async def make_server(
    db: AsyncSession,
    *,
    tenant: Tenant,
    owner: User,
    node: Node,
    template: Template,
    status: str = "stopped",
    memory_mb: int = 1024,
    **values: Any,
) -> Server:
    creator = Principal(
        kind="user",
        id=owner.id,
        user_id=owner.id,
        tenant_id=tenant.id,
        permissions=frozenset({"server.create"}),
    )
    async with in_tenant(db, tenant):
        server = await servers.create_server(
            db,
            creator,
            name=values.pop("name", f"srv-{new_id()[-6:]}"),
            template_id=template.id,
            node_id=node.id,
            allocated_memory_mb=memory_mb,
            allocated_cpu_cores=values.pop("cpu_cores", 1),
            allocated_disk_mb=values.pop("disk_mb", 1000),
            environment=values.pop("environment", {"MEMORY": "1024M"}),
            **values,
        )
        server.status = status
    return server


async def set_status(db: AsyncSession, server: Server, status: str) -> None:
    """Put a server in ``status`` as if the agent had reported it."""
    await db.execute(update(Server).where(Server.id == server.id).values(status=status))
    await db.commit()


async def matrix_world(
    db: AsyncSession, *, tenant: Tenant, owner: User
) -> tuple[dict[str, str], dict[str, Callable[[], Awaitable[str]]]]:
    """Ids and makers for the authorization matrix: a node, a template, a server of
    ``owner`` with one subuser, and fresh servers, allocations and subusers."""
    from hostplane.identity.access import service as access
    from hostplane.infra.servers import allocations
    from tests.support.factories import make_user

    node, _ = await make_node(
        db, tenant=tenant, port_range=(30000, 30199), max_memory_mb=1_000_000, max_cpu_cores=1000
    )
    template = await make_template(db, tenant=tenant)
    server = await make_server(db, tenant=tenant, owner=owner, node=node, template=template)
    owner_principal = Principal(kind="user", id=owner.id, user_id=owner.id, tenant_id=tenant.id)

    async def grant(server_id: str) -> str:
        subuser = await make_user(db, tenant=tenant, role="customer")
        async with in_tenant(db, tenant):
            await access.set_grant(
                db,
                resource_type="server",
                resource_id=server_id,
                user_id=subuser.id,
                permissions=["server.read"],
                granted_by=owner.id,
            )
        return subuser.id

    subuser_id = await grant(server.id)

    async def fresh_server_id() -> str:
        made = await make_server(db, tenant=tenant, owner=owner, node=node, template=template)
        return made.id

    async def fresh_allocation_port() -> str:
        async with in_tenant(db, tenant):
            allocation = await allocations.add_allocation(db, owner_principal, server.id)
        return str(allocation.container_port)

    async def fresh_subuser_id() -> str:
        return await grant(server.id)

    async def completed_backup(server_id: str) -> str:
        from hostplane.infra.backups.models import Backup

        backup = Backup(
            tenant_id=tenant.id,
            server_id=server_id,
            node_id=node.id,
            name="matrix",
            status="completed",
            size_bytes=10,
            checksum="sha256:" + "0" * 64,
        )
        db.add(backup)
        await db.commit()
        return backup.id

    backup_id = await completed_backup(server.id)

    async def fresh_backup_id() -> str:
        return await completed_backup(server.id)

    async def make_task() -> str:
        from hostplane.infra.schedules import service as schedules

        async with in_tenant(db, tenant):
            task = await schedules.create_task(
                db,
                owner_principal,
                {
                    "server_id": server.id,
                    "name": "matrix",
                    "action": "restart",
                    "schedule": "0 3 * * *",
                },
            )
        return task.id

    database_ids, database_makers = await _matrix_databases(db, tenant, server)

    async def make_alert_rule() -> str:
        from hostplane.infra.alerts.models import AlertRule

        rule = AlertRule(
            tenant_id=tenant.id,
            name="matrix",
            type="server_crashed",
            target="server",
            target_id="*",
            severity="warning",
            conditions={},
            actions=[],
            enabled=True,
            keep_open=True,
        )
        db.add(rule)
        await db.commit()
        return rule.id

    async def make_alert() -> str:
        from hostplane.infra.alerts import service as alerts

        rule_id = await make_alert_rule()
        async with in_tenant(db, tenant):
            rule = await alerts.get_rule(db, rule_id)
            alert = await alerts.open_alert(
                db, rule, alerts.Firing(server.id, node.id, "Crashed", "Server crashed", {})
            )
        assert alert is not None
        return alert.id

    alert_id = await make_alert()
    alert_rule_id = await make_alert_rule()

    ids = {
        "task_id": await make_task(),
        **database_ids,
        "alert_id": alert_id,
        "alert_rule_id": alert_rule_id,
        "backup_id": backup_id,
        "node_id": node.id,
        "template_id": template.id,
        "server_id": server.id,
        "primary_port": str(server.primary_port),
        "subuser_id": subuser_id,
    }
    makers: dict[str, Callable[[], Awaitable[str]]] = {
        "fresh_server_id": fresh_server_id,
        "fresh_allocation_port": fresh_allocation_port,
        "fresh_subuser_id": fresh_subuser_id,
        "fresh_backup_id": fresh_backup_id,
        "fresh_task_id": make_task,
        **database_makers,
        "fresh_alert_id": make_alert,
        "fresh_alert_rule_id": make_alert_rule,
        "fresh_node_id": lambda: _fresh_node_id(db, tenant),
        "fresh_template_id": lambda: _fresh_template_id(db, tenant),
    }
    return ids, makers


async def _matrix_databases(
    db: AsyncSession, tenant: Tenant, server: Server
) -> tuple[dict[str, str], dict[str, Callable[[], Awaitable[str]]]]:
    """A database host nothing answers at (so host calls are authorized, then 503) and a
    database of ``server`` on it."""
    from hostplane.core.security.crypto import SecretBox
    from hostplane.infra.databases.models import DatabaseHost, ServerDatabase
    from tests.conftest import TEST_SECRET

    async def host() -> str:
        row = DatabaseHost(
            tenant_id=tenant.id,
            name=f"matrix-{new_id()}",
            engine="mariadb",
            host="127.0.0.1",
            port=9,
            username="root",
            password_sealed=SecretBox(TEST_SECRET, "database-hosts").seal(b""),
            remote_pattern="%",
            node_ids=[],
            location_ids=[],
        )
        db.add(row)
        await db.commit()
        return row.id

    host_id = await host()

    async def database() -> str:
        row = ServerDatabase(
            tenant_id=tenant.id,
            server_id=server.id,
            host_id=host_id,
            name=f"s{new_id()[-8:]}_matrix",
            username=f"u{new_id()[-12:]}",
            password_sealed=SecretBox(TEST_SECRET, "server-databases").seal(b"pw"),
            status="active",
        )
        db.add(row)
        await db.commit()
        return row.id

    ids = {"database_host_id": host_id, "database_id": await database()}
    return ids, {"fresh_database_host_id": host, "fresh_database_id": database}


async def _fresh_node_id(db: AsyncSession, tenant: Tenant) -> str:
    node, _ = await make_node(db, tenant=tenant)
    return node.id


async def _fresh_template_id(db: AsyncSession, tenant: Tenant) -> str:
    return (await make_template(db, tenant=tenant)).id
