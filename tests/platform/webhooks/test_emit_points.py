"""The services emit their events in the transaction of the change."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.core.principal import Principal
from hostplane.core.runtime import Runtime
from hostplane.infra.backups import service as backups
from hostplane.infra.backups.models import Backup
from hostplane.infra.servers import service as servers
from tests.platform.webhooks.helpers import deliver_all
from tests.platform.webhooks.test_delivery import _endpoint
from tests.support.factories import make_user
from tests.support.identity import platform_tenant
from tests.support.infra import in_tenant, make_node, make_server, make_template
from tests.support.webhooks import receiver


async def test_server_and_backup_changes_reach_the_endpoint_in_order(
    runtime: Runtime, db: AsyncSession
) -> None:
    tenant = await platform_tenant(db)
    owner = await make_user(db, tenant=tenant, role="customer")
    node, _secret = await make_node(db, tenant=tenant)
    template = await make_template(db, tenant=tenant)
    async with receiver() as hook:
        await _endpoint(runtime, tenant.id, hook, ["server.*", "backup.*"])
        server = await make_server(db, tenant=tenant, owner=owner, node=node, template=template)
        operator = Principal(
            kind="user", id="op", user_id="op", tenant_id=tenant.id, permissions=frozenset({"*"})
        )
        async with in_tenant(db, tenant):
            loaded = await servers.load_for(db, operator, server.id, ("server.update",))
            servers.set_status(db, loaded, "installing")
        async with in_tenant(db, tenant):
            servers.set_status(db, loaded, "stopped")
        async with in_tenant(db, tenant):
            await servers.update_server(db, operator, server.id, {"name": "renamed"})
        async with in_tenant(db, tenant):
            servers.set_status(db, loaded, "starting")
            servers.set_status(db, loaded, "crashed")
        async with in_tenant(db, tenant):
            backup = Backup(
                tenant_id=tenant.id,
                server_id=server.id,
                node_id=node.id,
                name="b",
                status="pending",
            )
            db.add(backup)
            await db.flush()
            backups.mark_completed(db, backup, size_bytes=10, checksum="abc")
            backups.mark_completed(db, backup, size_bytes=10, checksum="abc")  # once only
        async with in_tenant(db, tenant):
            servers.set_status(db, loaded, "stopped")
            await servers.delete_server(db, operator, server.id)
        await deliver_all(runtime)

    events = [r.payload["event"] for r in hook.received]
    assert events == [
        "server.created",
        "server.installed",
        "server.updated",
        "server.crashed",
        "backup.completed",
        "server.deleted",
    ]
    assert all(r.verified for r in hook.received)
    created = hook.received[0].payload["data"]
    assert created["id"] == server.id and created["ownerId"] == owner.id
    assert hook.received[2].payload["data"]["name"] == "renamed"
    assert hook.received[4].payload["data"]["sizeBytes"] == 10
