"""Every table of the panel, imported in one place for Alembic and the tests."""

from hostplane.commerce.catalog.models import Plan  # noqa: F401 - registers the table
from hostplane.commerce.invoices.models import (  # noqa: F401 - registers the tables
    Invoice,
    InvoiceCounter,
    InvoiceLine,
)
from hostplane.commerce.ledger.models import (  # noqa: F401 - registers the tables
    LedgerAccount,
    LedgerEntry,
    LedgerTransaction,
)
from hostplane.commerce.payments.models import PaymentEvent, TopUp  # noqa: F401 - registers the tables
from hostplane.commerce.rewards.models import (  # noqa: F401 - registers the tables
    DailyReward,
    Referral,
    ReferralCode,
)
from hostplane.commerce.subscriptions.models import ServerSubscription  # noqa: F401 - registers the table
from hostplane.core.db.base import Base
from hostplane.identity.access.models import ResourceGrant
from hostplane.identity.api_keys.models import ApiKey  # noqa: F401 - registers the table
from hostplane.identity.auth.models import (
    AuthSession,
    ExternalIdentity,
    LoginChallenge,
    RecoveryCode,
    RefreshToken,
    SigningKeyRecord,
)
from hostplane.identity.roles.models import Role, UserRole
from hostplane.identity.tenants.models import Tenant
from hostplane.identity.users.models import User
from hostplane.infra.alerts.models import Alert, AlertAction, AlertRule  # noqa: F401 - registers the tables
from hostplane.infra.backups.models import Backup  # noqa: F401 - registers the table
from hostplane.infra.databases.models import DatabaseHost, ServerDatabase  # noqa: F401 - registers the tables
from hostplane.infra.files.models import FileLinkUse  # noqa: F401 - registers the table
from hostplane.infra.locations.models import Location  # noqa: F401 - registers the table
from hostplane.infra.nodes.models import Node, PendingServerDelete  # noqa: F401 - registers the tables
from hostplane.infra.schedules.models import ScheduledTask, TaskRun  # noqa: F401 - registers the tables
from hostplane.infra.servers.models import Server, ServerAllocation, ServerLog  # noqa: F401 - registers the tables
from hostplane.infra.templates.models import Template  # noqa: F401 - registers the table
from hostplane.infra.transfers.models import ServerTransfer  # noqa: F401 - registers the table
from hostplane.platform.admin.models import PlatformConfig  # noqa: F401 - registers the table
from hostplane.platform.audit.models import (  # noqa: F401 - registers the tables
    AuditChainHead,
    AuditCheckpoint,
    AuditLog,
)
from hostplane.platform.idempotency.models import IdempotencyRecord  # noqa: F401 - registers the table
from hostplane.platform.jobs.models import Job, JobWorker
from hostplane.platform.system import recorder as _system_recorder  # noqa: F401 - logs queue events at commit
from hostplane.platform.system.models import SystemEvent  # noqa: F401 - registers the table
from hostplane.platform.webhooks import events as _webhook_events  # noqa: F401 - writes emitted events at commit
from hostplane.platform.webhooks.models import (  # noqa: F401 - registers the tables
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
)

metadata = Base.metadata

__all__ = [
    "AuthSession",
    "Base",
    "ExternalIdentity",
    "Job",
    "JobWorker",
    "LoginChallenge",
    "RecoveryCode",
    "RefreshToken",
    "ResourceGrant",
    "Role",
    "SigningKeyRecord",
    "Tenant",
    "User",
    "UserRole",
    "metadata",
]
