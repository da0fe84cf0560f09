"""Who may call what: every route against every kind of caller.

Add a route with one ``case(...)`` line. Callers: ``anonymous``; ``owner``, a
customer who owns the resource in the path (their own profile, their own
key); ``other_user``, another customer of the same tenant; ``api_key``, a key
minted by the admin with scopes ``job.read`` and ``user.read``; ``admin``, a
built-in admin of the platform tenant; ``foreign``, an admin of another
tenant (who must never see the first tenant's resources: 404, not 403);
``admin_read``, ``admin_write`` and ``admin_access``, customers holding one more
role with only that permission (answered like ``other_user`` wherever a line
does not name them: the permission opens nothing there). A caller who cannot
see a server at all gets 404 for it, as for a made-up id; 403 is for a server
the caller can see but may not act on.
"""

import re

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from hostplane.core.ids import new_id
from hostplane.core.runtime import Runtime
from hostplane.identity.roles.models import Role, UserRole
from hostplane.identity.tenants.models import Tenant
from hostplane.platform.jobs.registry import JobRegistry
from hostplane.platform.jobs.worker import Worker
from tests.support.commerce import matrix_commerce
from tests.support.factories import make_job, make_user
from tests.support.identity import LoggedIn, logged_in, login, other_tenant, platform_tenant
from tests.support.infra import matrix_world
from tests.support.matrix import Case, World, case, run_case
from tests.support.payments import make_paid_invoice

# One line per route (formatting off, so it stays one line).
# fmt: off
CASES: list[Case] = [
    # identity: the caller's own account
    case("GET", "/api/auth/me", owner=200, other_user=200, api_key=200, admin=200, foreign=200),
    case("GET", "/api/users/me", owner=200, other_user=200, api_key=200, admin=200, foreign=200),
    case("PUT", "/api/users/me", body={"firstName": "Sam"}, owner=200, other_user=200, api_key=403, admin=200, foreign=200),
    case("POST", "/api/auth/2fa/enable", owner=200, other_user=200, api_key=403, admin=200, foreign=200),
    # 409: past authorization, refused because two-factor is not being set up / not on.
    case("POST", "/api/auth/2fa/confirm", body={"code": "000000"}, owner=409, other_user=409, api_key=403, admin=409, foreign=409),
    case("POST", "/api/auth/2fa/disable", body={"password": "x"}, owner=409, other_user=409, api_key=403, admin=409, foreign=409),
    case("GET", "/api/permissions", owner=200, other_user=200, api_key=200, admin=200, foreign=200),
    # identity: operators
    case("GET", "/api/admin/users", owner=403, other_user=403, api_key=200, admin=200, foreign=200, admin_read=200, admin_access=200),
    case("GET", "/api/users", owner=403, other_user=403, api_key=200, admin=200, foreign=200, admin_read=200, admin_access=200),
    case("POST", "/api/users", body={"email": "{fresh_email}", "password": "long enough 1"}, owner=403, other_user=403, api_key=403, admin=201, foreign=201, admin_access=201),
    case("GET", "/api/users/{target_user_id}", owner=403, other_user=403, api_key=200, admin=200, foreign=404, admin_read=200, admin_access=200),
    case("PUT", "/api/users/{fresh_user_id}", body={"name": "Renamed User"}, owner=403, other_user=403, api_key=403, admin=200, foreign=404, admin_access=200),
    case("DELETE", "/api/users/{fresh_user_id}", owner=403, other_user=403, api_key=403, admin=200, foreign=404, admin_access=200),
    case("POST", "/api/admin/users/{fresh_user_id}/ban", owner=403, other_user=403, api_key=403, admin=200, foreign=404, admin_access=200),
    case("POST", "/api/admin/users/{fresh_user_id}/unban", owner=403, other_user=403, api_key=403, admin=409, foreign=404, admin_access=409),
    case("GET", "/api/admin/users/{target_user_id}/roles", owner=403, other_user=403, api_key=403, admin=200, foreign=404, admin_read=200, admin_access=200),
    case("POST", "/api/admin/users/{target_user_id}/roles", body={"roleId": "{customer_role_id}"}, owner=403, other_user=403, api_key=403, admin=200, foreign=404, admin_access=200),
    case("DELETE", "/api/admin/users/{fresh_user_id}/roles/{customer_role_id}", owner=403, other_user=403, api_key=403, admin=200, foreign=404, admin_access=200),
    case("GET", "/api/admin/roles", owner=403, other_user=403, api_key=403, admin=200, foreign=200, admin_read=200, admin_access=200),
    case("POST", "/api/admin/roles", body={"name": "{fresh_role_name}", "permissions": ["job.read"], "rank": 5}, owner=403, other_user=403, api_key=403, admin=201, foreign=201, admin_access=201),
    case("GET", "/api/admin/roles/{role_id}", owner=403, other_user=403, api_key=403, admin=200, foreign=404, admin_read=200, admin_access=200),
    case("PUT", "/api/admin/roles/{role_id}", body={"description": "edited"}, owner=403, other_user=403, api_key=403, admin=200, foreign=404, admin_access=200),
    case("DELETE", "/api/admin/roles/{fresh_role_id}", owner=403, other_user=403, api_key=403, admin=200, foreign=404, admin_access=200),
    case("GET", "/api/tenants", owner=403, other_user=403, api_key=403, admin=200, foreign=403),
    case("GET", "/api/tenants/{tenant_id}", owner=403, other_user=403, api_key=403, admin=200, foreign=403),
    case("POST", "/api/tenants", body={"name": "Nope"}, owner=403, other_user=403, api_key=403, admin=403, foreign=403),
    # identity: API keys (keys never mint keys; account keys are one's own: 404 for anyone else)
    case("GET", "/api/admin/api-keys", owner=403, other_user=403, api_key=403, admin=200, foreign=200, admin_access=200),
    case("POST", "/api/admin/api-keys", body={"name": "Made", "scopes": ["job.read"]}, owner=403, other_user=403, api_key=403, admin=201, foreign=201, admin_access=201),
    case("DELETE", "/api/admin/api-keys/{fresh_key_id}", owner=403, other_user=403, api_key=403, admin=200, foreign=404, admin_access=200),
    case("GET", "/api/account/api-keys", owner=200, other_user=200, api_key=403, admin=200, foreign=200),
    case("POST", "/api/account/api-keys", body={"name": "Mine", "scopes": ["server.start"]}, owner=201, other_user=201, api_key=403, admin=201, foreign=201),
    case("DELETE", "/api/account/api-keys/{fresh_own_key_id}", owner=200, other_user=404, api_key=403, admin=404, foreign=404),
    # platform: jobs and audit
    case("GET", "/api/jobs", owner=403, other_user=403, api_key=200, admin=200, foreign=200, admin_read=200, admin_access=200),
    case("GET", "/api/jobs/{job_id}", owner=403, other_user=403, api_key=200, admin=200, foreign=404, admin_read=200, admin_access=200),
    case("POST", "/api/jobs/{fresh_failed_job_id}/retry", owner=403, other_user=403, api_key=403, admin=200, foreign=404, admin_access=200),
    case("GET", "/api/admin/audit-logs", owner=403, other_user=403, api_key=403, admin=200, foreign=200, admin_read=200, admin_access=200),
    case("GET", "/api/audit", owner=403, other_user=403, api_key=403, admin=200, foreign=200, admin_read=200, admin_access=200),
    # commerce: wallets (a user's own), rewards, operator adjustments (billing.write)
    case("GET", "/api/economy/wallet", owner=200, other_user=200, api_key=200, admin=200, foreign=200),
    case("GET", "/api/economy/transactions", owner=200, other_user=200, api_key=200, admin=200, foreign=200),
    case("POST", "/api/economy/earn/daily", owner=200, other_user=200, api_key=403, admin=200, foreign=200),
    case("GET", "/api/economy/earn/referral", owner=200, other_user=200, api_key=200, admin=200, foreign=200),
    case("POST", "/api/economy/earn/referral", owner=200, other_user=200, api_key=403, admin=200, foreign=200),
    # 402: past authorization, refused because a new wallet holds no credits.
    case("POST", "/api/billing/convert", body={"credits": 1}, owner=402, other_user=402, api_key=403, admin=402, foreign=402),
    case("POST", "/api/admin/users/{target_user_id}/balance", body={"amount": 5, "currency": "coins", "reason": "goodwill"}, owner=403, other_user=403, api_key=403, admin=403, foreign=403, admin_access=200),
    # platform: webhooks (the tenant's admins) and system routes (admins)
    case("GET", "/api/webhooks", owner=403, other_user=403, api_key=403, admin=200, foreign=200),
    case("POST", "/api/webhooks", body={"url": "https://hooks.example.com/in", "events": ["*"]}, owner=403, other_user=403, api_key=403, admin=201, foreign=201),
    case("GET", "/api/webhooks/{webhook_id}", owner=403, other_user=403, api_key=403, admin=200, foreign=404),
    case("PUT", "/api/webhooks/{webhook_id}", body={"description": "edited"}, owner=403, other_user=403, api_key=403, admin=200, foreign=404),
    case("DELETE", "/api/webhooks/{fresh_webhook_id}", owner=403, other_user=403, api_key=403, admin=200, foreign=404),
    case("GET", "/api/webhooks/{webhook_id}/deliveries", owner=403, other_user=403, api_key=403, admin=200, foreign=404),
    case("POST", "/api/webhooks/{webhook_id}/deliveries/{webhook_delivery_id}/redeliver", owner=403, other_user=403, api_key=403, admin=202, foreign=404),
    case("POST", "/api/webhooks/{webhook_id}/test", owner=403, other_user=403, api_key=403, admin=202, foreign=404),
    case("GET", "/api/system/health", owner=403, other_user=403, api_key=403, admin=200, foreign=200, admin_read=200, admin_access=200),
    case("GET", "/api/system/events", owner=403, other_user=403, api_key=403, admin=200, foreign=200, admin_read=200, admin_access=200),
    # platform: operator routes (the configuration is the platform tenant's to change)
    case("GET", "/api/admin/stats", owner=403, other_user=403, api_key=403, admin=200, foreign=200, admin_read=200, admin_access=200),
    case("GET", "/api/admin/health", owner=403, other_user=403, api_key=403, admin=200, foreign=200, admin_read=200, admin_access=200),
    case("GET", "/api/admin/config", owner=403, other_user=403, api_key=403, admin=200, foreign=200, admin_access=200),
    case("PATCH", "/api/admin/config", body={"maintenance": {"enabled": False}}, owner=403, other_user=403, api_key=403, admin=403, foreign=403, admin_access=200),
    case("GET", "/api/v1/settings/system/config", anonymous=200, owner=200, other_user=200, api_key=200, admin=200, foreign=200),
    case("GET", "/api/admin/servers", owner=403, other_user=403, api_key=403, admin=200, foreign=200, admin_read=200, admin_access=200),
    case("POST", "/api/admin/servers/{fresh_server_id}/suspend", owner=403, other_user=403, api_key=403, admin=200, foreign=404, admin_access=200),
    case("DELETE", "/api/admin/servers/{fresh_server_id}", owner=403, other_user=403, api_key=403, admin=202, foreign=404, admin_access=202),
    # commerce: top-ups (no gateway is configured in the matrix: 400 = authorized, then refused
    # for the gateway), gateway webhooks (public: the signature is the authorization), invoices
    case("POST", "/api/billing/top-up", body={"amount": "10", "gateway": "stripe"}, owner=400, other_user=400, api_key=403, admin=400, foreign=400),
    case("POST", "/api/billing/webhook/{gateway}", body={"id": "evt_1"}, anonymous=400, owner=400, other_user=400, api_key=400, admin=400, foreign=400),
    case("POST", "/api/payments/stripe/webhook", body={"id": "evt_1"}, anonymous=400, owner=400, other_user=400, api_key=400, admin=400, foreign=400),
    case("GET", "/api/billing/invoices", owner=200, other_user=200, api_key=403, admin=200, foreign=200),
    case("GET", "/api/billing/invoices/{invoice_id}/pdf", owner=200, other_user=404, api_key=403, admin=200, foreign=404),
    # infra: locations, nodes and templates (operators; templates readable by everyone)
    case("GET", "/api/locations", owner=403, other_user=403, api_key=403, admin=200, foreign=200, admin_read=200, admin_access=200),
    case("POST", "/api/locations", body={"name": "Matrix"}, owner=403, other_user=403, api_key=403, admin=201, foreign=201, admin_write=201, admin_access=201),
    case("GET", "/api/nodes", owner=403, other_user=403, api_key=403, admin=200, foreign=200, admin_read=200, admin_access=200),
    case("POST", "/api/nodes", body={"name": "n", "hostname": "h", "publicAddress": "192.0.2.1", "maxMemoryMb": 1024, "maxCpuCores": 1}, owner=403, other_user=403, api_key=403, admin=201, foreign=201, admin_write=201, admin_access=201),
    case("GET", "/api/nodes/{node_id}", owner=403, other_user=403, api_key=403, admin=200, foreign=404, admin_read=200, admin_access=200),
    case("PUT", "/api/nodes/{node_id}", body={"name": "renamed"}, owner=403, other_user=403, api_key=403, admin=200, foreign=404, admin_write=200, admin_access=200),
    case("DELETE", "/api/nodes/{fresh_node_id}", owner=403, other_user=403, api_key=403, admin=200, foreign=404, admin_write=200, admin_access=200),
    case("POST", "/api/nodes/{node_id}/deployment-token", owner=403, other_user=403, api_key=403, admin=200, foreign=404, admin_write=200, admin_access=200),
    case("GET", "/api/templates", owner=200, other_user=200, api_key=200, admin=200, foreign=200),
    case("GET", "/api/templates/{template_id}", owner=200, other_user=200, api_key=200, admin=200, foreign=404),
    case("POST", "/api/templates", body={"name": "Made", "dockerImage": "img", "startCommand": "run"}, owner=403, other_user=403, api_key=403, admin=201, foreign=201, admin_write=201, admin_access=201),
    case("PUT", "/api/templates/{template_id}", body={"description": "edited"}, owner=403, other_user=403, api_key=403, admin=200, foreign=404, admin_write=200, admin_access=200),
    case("DELETE", "/api/templates/{fresh_template_id}", owner=403, other_user=403, api_key=403, admin=200, foreign=404, admin_write=200, admin_access=200),
    case("POST", "/api/admin/templates/import", body={"name": "Egg", "docker_images": {"x": "img"}, "startup": "run"}, owner=403, other_user=403, api_key=403, admin=201, foreign=201, admin_write=201, admin_access=201),
    # infra: servers ("owner" owns {server_id}; 409 = authorized, refused by the server's state)
    case("GET", "/api/servers", owner=200, other_user=200, api_key=403, admin=200, foreign=200),
    case("POST", "/api/servers", body={"name": "made", "templateId": "{template_id}", "nodeId": "{node_id}", "allocatedMemoryMb": 256, "allocatedCpuCores": 1, "allocatedDiskMb": 100, "environment": {"MEMORY": "256M"}}, owner=403, other_user=403, api_key=403, admin=201, foreign=404),
    case("GET", "/api/servers/{server_id}", owner=200, other_user=404, api_key=404, admin=200, foreign=404, admin_read=200, admin_access=200),
    case("PUT", "/api/servers/{server_id}", body={"name": "renamed"}, owner=200, other_user=404, api_key=404, admin=200, foreign=404, admin_read=403, admin_access=403),
    # No agent is connected: commands are authorized, then 503 (the node did not take
    # them, the status is put back) and a delete is remembered for the node (202).
    case("DELETE", "/api/servers/{fresh_server_id}", owner=202, other_user=404, api_key=404, admin=202, foreign=404, admin_read=403, admin_access=202),
    case("POST", "/api/servers/{fresh_server_id}/suspend", owner=403, other_user=404, api_key=404, admin=200, foreign=404, admin_read=403, admin_access=200),
    case("POST", "/api/servers/{server_id}/unsuspend", owner=403, other_user=404, api_key=404, admin=409, foreign=404, admin_read=403, admin_access=409),
    case("POST", "/api/servers/{fresh_server_id}/install", owner=503, other_user=404, api_key=404, admin=503, foreign=404, admin_read=403, admin_access=403),
    case("POST", "/api/servers/{fresh_server_id}/start", owner=503, other_user=404, api_key=404, admin=503, foreign=404, admin_read=403, admin_access=403),
    case("POST", "/api/servers/{server_id}/stop", owner=409, other_user=404, api_key=404, admin=409, foreign=404, admin_read=403, admin_access=403),
    case("POST", "/api/servers/{fresh_server_id}/restart", owner=503, other_user=404, api_key=404, admin=503, foreign=404, admin_read=403, admin_access=403),
    case("POST", "/api/servers/{server_id}/kill", owner=409, other_user=404, api_key=404, admin=409, foreign=404, admin_read=403, admin_access=403),
    case("POST", "/api/servers/{fresh_server_id}/power", body={"signal": "start"}, owner=503, other_user=404, api_key=404, admin=503, foreign=404, admin_read=403, admin_access=403),
    case("POST", "/api/servers/{server_id}/command", body={"command": "say hi"}, owner=409, other_user=404, api_key=404, admin=409, foreign=404, admin_read=403, admin_access=403),
    case("POST", "/api/servers/{server_id}/reset-crash-count", owner=200, other_user=404, api_key=404, admin=200, foreign=404, admin_read=403, admin_access=403),
    case("PATCH", "/api/servers/{server_id}/restart-policy", body={"restartPolicy": "never"}, owner=200, other_user=404, api_key=404, admin=200, foreign=404, admin_read=403, admin_access=403),
    case("GET", "/api/servers/{server_id}/websocket", owner=200, other_user=404, api_key=404, admin=200, foreign=404, admin_read=403, admin_access=403),
    case("GET", "/api/servers/{server_id}/resources", owner=200, other_user=404, api_key=404, admin=200, foreign=404, admin_read=200, admin_access=200),
    case("GET", "/api/servers/{server_id}/logs", owner=200, other_user=404, api_key=404, admin=200, foreign=404, admin_read=403, admin_access=403),
    case("GET", "/api/servers/{server_id}/allocations", owner=200, other_user=404, api_key=404, admin=200, foreign=404, admin_read=200, admin_access=200),
    case("POST", "/api/servers/{fresh_server_id}/allocations", body={"containerPort": 7000}, owner=200, other_user=404, api_key=404, admin=200, foreign=404, admin_read=403, admin_access=403),
    case("POST", "/api/servers/{server_id}/allocations/primary", body={"containerPort": "{primary_port}"}, owner=200, other_user=404, api_key=404, admin=200, foreign=404, admin_read=403, admin_access=403),
    case("DELETE", "/api/servers/{server_id}/allocations/{fresh_allocation_port}", owner=200, other_user=404, api_key=404, admin=200, foreign=404, admin_read=403, admin_access=403),
    case("GET", "/api/servers/{server_id}/network", owner=200, other_user=404, api_key=404, admin=200, foreign=404, admin_read=200, admin_access=200),
    case("POST", "/api/servers/{fresh_server_id}/network/allocations", owner=201, other_user=404, api_key=404, admin=201, foreign=404, admin_read=403, admin_access=403),
    case("GET", "/api/servers/{server_id}/users", owner=200, other_user=404, api_key=404, admin=200, foreign=404, admin_read=403, admin_access=403),
    case("POST", "/api/servers/{server_id}/users", body={"userId": "{fresh_user_id}", "permissions": ["server.read"]}, owner=201, other_user=404, api_key=404, admin=201, foreign=404, admin_read=403, admin_access=403),
    case("PUT", "/api/servers/{server_id}/users/{subuser_id}", body={"permissions": ["server.read", "server.start"]}, owner=200, other_user=404, api_key=404, admin=200, foreign=404, admin_read=403, admin_access=403),
    case("DELETE", "/api/servers/{server_id}/users/{fresh_subuser_id}", owner=200, other_user=404, api_key=404, admin=200, foreign=404, admin_read=403, admin_access=403),
    # commerce: the plan catalogue (public), plans (operators), servers bought on plans. The
    # matrix's plans are free. Renewing or changing a plan is the buyer's, or billing.write's
    # (admin_access); operators who can see the server but not move money get 403.
    case("GET", "/api/catalog/plans", anonymous=200, owner=200, other_user=200, api_key=200, admin=200, foreign=200),
    case("GET", "/api/admin/plans", owner=403, other_user=403, api_key=403, admin=200, foreign=200),
    case("POST", "/api/admin/plans", body={"name": "Made", "currencyType": "coins", "price": 5, "resources": {"memoryMb": 256, "cpuCores": 1, "diskMb": 100}, "templateId": "{template_id}"}, owner=403, other_user=403, api_key=403, admin=201, foreign=404),
    case("GET", "/api/admin/plans/{plan_id}", owner=403, other_user=403, api_key=403, admin=200, foreign=404),
    case("PUT", "/api/admin/plans/{plan_id}", body={"description": "edited"}, owner=403, other_user=403, api_key=403, admin=200, foreign=404),
    case("DELETE", "/api/admin/plans/{fresh_plan_id}", owner=403, other_user=403, api_key=403, admin=200, foreign=404),
    case("POST", "/api/servers/deploy", body={"planId": "{plan_id}", "name": "matrix", "environment": {"MEMORY": "256M"}}, owner=201, other_user=201, api_key=403, admin=201, foreign=404),
    case("POST", "/api/servers/{fresh_plan_server_id}/renew", owner=200, other_user=404, api_key=404, admin=403, foreign=404, admin_read=403, admin_access=200),
    case("POST", "/api/servers/{fresh_plan_server_id}/upgrade", body={"planId": "{other_plan_id}"}, owner=200, other_user=404, api_key=404, admin=403, foreign=404, admin_read=403, admin_access=200),
    case("GET", "/api/subscriptions/{subscription_id}", owner=200, other_user=404, api_key=404, admin=200, foreign=404),
    # infra: alerts (of the owner's server) and alert rules (admin resources)
    case("GET", "/api/alerts", owner=200, other_user=200, api_key=403, admin=200, foreign=200),
    case("GET", "/api/alerts/stats", owner=200, other_user=200, api_key=403, admin=200, foreign=200),
    case("GET", "/api/alerts/{alert_id}", owner=200, other_user=404, api_key=403, admin=200, foreign=404, admin_read=200, admin_access=200),
    case("POST", "/api/alerts/{fresh_alert_id}/resolve", owner=403, other_user=403, api_key=403, admin=200, foreign=404),
    case("POST", "/api/alerts/bulk-resolve", body={"alertIds": ["{fresh_alert_id}"]}, owner=403, other_user=403, api_key=403, admin=200, foreign=200),
    case("GET", "/api/alert-rules", owner=403, other_user=403, api_key=403, admin=200, foreign=200, admin_write=200, admin_access=200),
    case("POST", "/api/alert-rules", body={"name": "made", "type": "server_crashed"}, owner=403, other_user=403, api_key=403, admin=201, foreign=201, admin_write=201, admin_access=201),
    case("GET", "/api/alert-rules/{alert_rule_id}", owner=403, other_user=403, api_key=403, admin=200, foreign=404, admin_write=200, admin_access=200),
    case("PUT", "/api/alert-rules/{alert_rule_id}", body={"name": "renamed"}, owner=403, other_user=403, api_key=403, admin=200, foreign=404, admin_write=200, admin_access=200),
    case("DELETE", "/api/alert-rules/{fresh_alert_rule_id}", owner=403, other_user=403, api_key=403, admin=200, foreign=404, admin_write=200, admin_access=200),
    # infra: backups and transfers (no agent is connected; jobs are only queued)
    case("GET", "/api/servers/{server_id}/backups", owner=200, other_user=404, api_key=404, admin=200, foreign=404, admin_read=403, admin_access=403),
    case("POST", "/api/servers/{fresh_server_id}/backups", body={"name": "nightly"}, owner=200, other_user=404, api_key=404, admin=200, foreign=404, admin_read=403, admin_access=403),
    case("GET", "/api/servers/{server_id}/backups/{backup_id}", owner=200, other_user=404, api_key=404, admin=200, foreign=404, admin_read=403, admin_access=403),
    case("POST", "/api/servers/{server_id}/backups/{backup_id}/restore", owner=200, other_user=404, api_key=404, admin=200, foreign=404, admin_read=403, admin_access=403),
    case("POST", "/api/servers/{server_id}/backups/{backup_id}/lock", body={"locked": False}, owner=200, other_user=404, api_key=404, admin=200, foreign=404, admin_read=403, admin_access=403),
    case("GET", "/api/servers/{server_id}/backups/{backup_id}/download", owner=200, other_user=404, api_key=404, admin=200, foreign=404, admin_read=403, admin_access=403),
    case("DELETE", "/api/servers/{server_id}/backups/{fresh_backup_id}", owner=200, other_user=404, api_key=404, admin=200, foreign=404, admin_read=403, admin_access=403),
    case("POST", "/api/servers/{server_id}/transfer", body={"targetNodeId": "{node_id}"}, owner=403, other_user=404, api_key=404, admin=400, foreign=404, admin_read=403, admin_access=400),
    case("GET", "/api/servers/{server_id}/transfers", owner=200, other_user=404, api_key=404, admin=200, foreign=404, admin_read=200, admin_access=200),
    # infra: scheduled tasks (of the owner's server; runs are only queued). Like backups,
    # operators' read roles (admin.read) do not open a server's tasks: their list is empty.
    case("GET", "/api/tasks", owner=200, other_user=200, api_key=403, admin=200, foreign=200, admin_read=200, admin_access=200),
    case("POST", "/api/tasks", body={"serverId": "{server_id}", "name": "Nightly", "action": "restart", "schedule": "0 3 * * *"}, owner=201, other_user=404, api_key=404, admin=201, foreign=404, admin_read=403, admin_access=403),
    case("GET", "/api/tasks/{task_id}", owner=200, other_user=404, api_key=404, admin=200, foreign=404, admin_read=403, admin_access=403),
    case("PUT", "/api/tasks/{task_id}", body={"schedule": "0 4 * * *"}, owner=200, other_user=404, api_key=404, admin=200, foreign=404, admin_read=403, admin_access=403),
    case("DELETE", "/api/tasks/{fresh_task_id}", owner=200, other_user=404, api_key=404, admin=200, foreign=404, admin_read=403, admin_access=403),
    case("POST", "/api/tasks/{task_id}/execute", owner=200, other_user=404, api_key=404, admin=200, foreign=404, admin_read=403, admin_access=403),
    case("GET", "/api/tasks/{task_id}/runs", owner=200, other_user=404, api_key=404, admin=200, foreign=404, admin_read=403, admin_access=403),
    # infra: database hosts (nothing answers at the matrix host: 503 = authorized, then the
    # host was unreachable) and server databases (the server's databaseLimit is 0: 409)
    case("GET", "/api/admin/database-hosts", owner=403, other_user=403, api_key=403, admin=200, foreign=200, admin_read=200, admin_access=200),
    case("POST", "/api/admin/database-hosts", body={"name": "{fresh_role_name}", "engine": "mariadb", "host": "127.0.0.1", "port": 9, "username": "root", "password": ""}, owner=403, other_user=403, api_key=403, admin=503, foreign=503, admin_write=503, admin_access=503),
    case("GET", "/api/admin/database-hosts/{database_host_id}", owner=403, other_user=403, api_key=403, admin=200, foreign=404, admin_read=200, admin_access=200),
    case("PUT", "/api/admin/database-hosts/{database_host_id}", body={"maxDatabases": 10}, owner=403, other_user=403, api_key=403, admin=200, foreign=404, admin_write=200, admin_access=200),
    case("DELETE", "/api/admin/database-hosts/{fresh_database_host_id}", owner=403, other_user=403, api_key=403, admin=200, foreign=404, admin_write=200, admin_access=200),
    case("GET", "/api/servers/{server_id}/databases", owner=200, other_user=404, api_key=404, admin=200, foreign=404, admin_read=403, admin_access=403),
    case("POST", "/api/servers/{server_id}/databases", body={"hostId": "{database_host_id}", "name": "matrix"}, owner=409, other_user=404, api_key=404, admin=409, foreign=404, admin_read=403, admin_access=403),
    case("POST", "/api/servers/{server_id}/databases/{database_id}/rotate", owner=503, other_user=404, api_key=404, admin=503, foreign=404, admin_read=403, admin_access=403),
    case("DELETE", "/api/servers/{server_id}/databases/{fresh_database_id}", owner=503, other_user=404, api_key=404, admin=503, foreign=404, admin_read=403, admin_access=403),
    # infra: files (no agent is connected: 503 = authorized, the node did not answer; 400 =
    # authorized, the path (NUL byte or missing) refused before anything reached the node)
    case("GET", "/api/servers/{server_id}/files", owner=503, other_user=404, api_key=404, admin=503, foreign=404, admin_read=403, admin_access=403),
    case("GET", "/api/servers/{server_id}/files/list", owner=503, other_user=404, api_key=404, admin=503, foreign=404, admin_read=403, admin_access=403),
    case("GET", "/api/servers/{server_id}/files/content", owner=400, other_user=404, api_key=404, admin=400, foreign=404, admin_read=403, admin_access=403),
    case("GET", "/api/servers/{server_id}/files/download", owner=400, other_user=404, api_key=404, admin=400, foreign=404, admin_read=403, admin_access=403),
    case("GET", "/api/servers/{server_id}/files/upload", owner=200, other_user=404, api_key=404, admin=200, foreign=404, admin_read=403, admin_access=403),
    case("POST", "/api/servers/{server_id}/files/upload", owner=400, other_user=404, api_key=404, admin=400, foreign=404, admin_read=403, admin_access=403),
    case("POST", "/api/servers/{server_id}/files/create", body={"path": "/a\u0000"}, owner=400, other_user=404, api_key=404, admin=400, foreign=404, admin_read=403, admin_access=403),
    case("POST", "/api/servers/{server_id}/files/write", body={"path": "/a\u0000", "content": ""}, owner=400, other_user=404, api_key=404, admin=400, foreign=404, admin_read=403, admin_access=403),
    case("DELETE", "/api/servers/{server_id}/files", owner=400, other_user=404, api_key=404, admin=400, foreign=404, admin_read=403, admin_access=403),
    case("POST", "/api/servers/{server_id}/files/delete", body={"paths": ["/a\u0000"]}, owner=400, other_user=404, api_key=404, admin=400, foreign=404, admin_read=403, admin_access=403),
    case("POST", "/api/servers/{server_id}/files/rename", body={"from": "/a\u0000", "to": "/b"}, owner=400, other_user=404, api_key=404, admin=400, foreign=404, admin_read=403, admin_access=403),
    case("POST", "/api/servers/{server_id}/files/copy", body={"path": "/a\u0000"}, owner=400, other_user=404, api_key=404, admin=400, foreign=404, admin_read=403, admin_access=403),
    case("POST", "/api/servers/{server_id}/files/chmod", body={"path": "/a\u0000", "mode": "0644"}, owner=400, other_user=404, api_key=404, admin=400, foreign=404, admin_read=403, admin_access=403),
    case("POST", "/api/servers/{server_id}/files/compress", body={"paths": ["/a\u0000"]}, owner=400, other_user=404, api_key=404, admin=400, foreign=404, admin_read=403, admin_access=403),
    case("POST", "/api/servers/{server_id}/files/decompress", body={"archivePath": "/a\u0000"}, owner=400, other_user=404, api_key=404, admin=400, foreign=404, admin_read=403, admin_access=403),
    case("POST", "/api/servers/{server_id}/files/pull", body={"url": "http://192.0.2.1/x", "directory": "/a\u0000"}, owner=400, other_user=404, api_key=404, admin=400, foreign=404, admin_read=403, admin_access=403),
]
# fmt: on


async def holding(
    client: httpx.AsyncClient, db: AsyncSession, tenant: Tenant, permission: str
) -> LoggedIn:
    """A logged-in customer with one more role, holding only ``permission``."""
    user = await make_user(db, tenant=tenant, role="customer")
    role = Role(tenant_id=tenant.id, name=f"Only {permission}", permissions=[permission], rank=50)
    db.add(role)
    await db.flush()
    db.add(UserRole(user_id=user.id, role_id=role.id))
    await db.commit()
    response = await login(client, user.email, tenant=tenant.slug)
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    return LoggedIn(user=user, token=data["token"], refresh_token=data["refreshToken"], body=data)


@pytest.fixture
async def world(client: httpx.AsyncClient, db: AsyncSession, runtime: Runtime) -> World:
    home = await platform_tenant(db)
    away = await other_tenant(db)
    admin = await logged_in(client, db, tenant=home, role="admin")
    owner = await logged_in(client, db, tenant=home)
    other = await logged_in(client, db, tenant=home)
    foreign = await logged_in(client, db, tenant=away, role="admin")
    admins = {
        name: await holding(client, db, home, name.replace("_", "."))
        for name in ("admin_read", "admin_write", "admin_access")
    }
    minted = await client.post(
        "/api/admin/api-keys",
        json={"name": "Discord Bot", "scopes": ["job.read", "user.read"]},
        headers=admin.headers,
    )
    assert minted.status_code == 201, minted.text
    job = await make_job(db, name="matrix.job", tenant=home, server_id="srv-1")
    infra_ids, infra_makers = await matrix_world(db, tenant=home, owner=owner.user)
    invoice = await make_paid_invoice(db, user=owner.user)
    commerce_ids, commerce_makers = await matrix_commerce(
        client,
        db,
        admin_headers=admin.headers,
        owner_headers=owner.headers,
        template_id=infra_ids["template_id"],
    )

    async def fresh_user_id() -> str:
        user_id = (await make_user(db, tenant=home, role="customer")).id
        # Reading the id after the commit began a read; end it, or the next
        # insert (after the app has written) meets a stale SQLite snapshot.
        await db.commit()
        return user_id

    async def fresh_failed_job_id() -> str:
        failing = JobRegistry()

        async def fail(_ctx: object, **_ids: object) -> None:
            raise RuntimeError("matrix")

        failing.register("matrix.failing", fail)
        created = await make_job(db, name="matrix.failing", tenant=home, max_attempts=1)
        await Worker(runtime, registry=failing).run_until_idle()
        return created.id

    async def fresh_key_id() -> str:
        response = await client.post(
            "/api/admin/api-keys",
            json={"name": "Spare", "scopes": ["job.read"]},
            headers=admin.headers,
        )
        assert response.status_code == 201, response.text
        return str(response.json()["data"]["id"])

    role = await client.post(
        "/api/admin/roles",
        json={"name": "Matrix Viewer", "permissions": ["job.read"], "rank": 10},
        headers=admin.headers,
    )
    assert role.status_code == 201, role.text
    customer_role_id = await db.scalar(
        select(Role.id).where(Role.name == "customer", Role.tenant_id.is_(None))
    )
    assert customer_role_id is not None

    async def fresh_role_id() -> str:
        response = await client.post(
            "/api/admin/roles",
            json={"name": f"Doomed {new_id()}", "permissions": [], "rank": 1},
            headers=admin.headers,
        )
        assert response.status_code == 201, response.text
        return str(response.json()["data"]["id"])

    # Several callers create the same thing: each needs its own unique name.
    async def fresh_email() -> str:
        return f"made-{new_id()}@example.com"

    async def fresh_role_name() -> str:
        return f"Matrix Made {new_id()}"

    async def fresh_own_key_id() -> str:
        response = await client.post(
            "/api/account/api-keys",
            json={"name": "Own", "scopes": ["server.start"]},
            headers=owner.headers,
        )
        assert response.status_code == 201, response.text
        return str(response.json()["data"]["id"])

    async def fresh_webhook_id() -> str:
        response = await client.post(
            "/api/webhooks",
            json={"url": "https://hooks.example.com/in", "events": ["*"]},
            headers=admin.headers,
        )
        assert response.status_code == 201, response.text
        return str(response.json()["data"]["id"])

    webhook_id = await fresh_webhook_id()
    tested = await client.post(f"/api/webhooks/{webhook_id}/test", headers=admin.headers)
    assert tested.status_code == 202, tested.text
    deliveries = await client.get(f"/api/webhooks/{webhook_id}/deliveries", headers=admin.headers)
    webhook_delivery_id = deliveries.json()["data"][0]["id"]
    # The app wrote after this session last read: start its next transaction afresh, or
    # its next write meets a stale SQLite snapshot.
    await db.commit()

    return World(
        tokens={
            "anonymous": None,
            "owner": owner.token,
            "other_user": other.token,
            "api_key": minted.json()["data"]["key"],
            "admin": admin.token,
            "foreign": foreign.token,
            **{name: caller.token for name, caller in admins.items()},
        },
        ids={
            "target_user_id": other.user.id,
            "job_id": job.id,
            "tenant_id": home.id,
            "role_id": role.json()["data"]["id"],
            "customer_role_id": customer_role_id,
            "webhook_id": webhook_id,
            "webhook_delivery_id": webhook_delivery_id,
            "invoice_id": invoice.id,
            "gateway": "stripe",
            **infra_ids,
            **commerce_ids,
        },
        makers={
            "fresh_user_id": fresh_user_id,
            "fresh_failed_job_id": fresh_failed_job_id,
            "fresh_key_id": fresh_key_id,
            "fresh_role_id": fresh_role_id,
            "fresh_own_key_id": fresh_own_key_id,
            "fresh_email": fresh_email,
            "fresh_role_name": fresh_role_name,
            "fresh_webhook_id": fresh_webhook_id,
            **infra_makers,
            **commerce_makers,
        },
    )


@pytest.mark.parametrize("route", CASES, ids=[c.id for c in CASES])
async def test_route_answers_each_caller_as_expected(
    client: httpx.AsyncClient, world: World, route: Case
) -> None:
    mismatches = await run_case(client, world, route)
    assert not mismatches, "\n".join(mismatches)


def test_every_api_route_is_in_the_matrix() -> None:
    """A new route without a matrix line fails here (routes read from the OpenAPI document)."""
    from hostplane.app import create_app
    from hostplane.core.config import Settings

    document = create_app(
        Settings(environment="development", database_url="sqlite+aiosqlite:///:memory:")
    ).openapi()
    covered = {(c.method, _template(c.path)) for c in CASES}
    exempt = {
        # Anonymous by design (login and friends); their refusals are tested in tests/identity.
        ("POST", "/api/auth/register"),
        ("POST", "/api/auth/login"),
        ("POST", "/api/auth/login/2fa"),
        ("POST", "/api/auth/refresh"),
        ("POST", "/api/auth/logout"),
        ("POST", "/api/auth/sync"),
    }
    missing = [
        f"{method.upper()} {path}"
        for path, operations in document["paths"].items()
        if path.startswith("/api/")
        for method in operations
        if (method.upper(), _template(path)) not in covered | exempt
    ]
    assert not missing, "routes without an authorization matrix line:\n" + "\n".join(missing)


def _template(path: str) -> str:
    return re.sub(r"\{[a-z_]+\}", "{}", path)
