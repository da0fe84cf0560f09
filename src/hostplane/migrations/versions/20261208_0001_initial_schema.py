"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-12-08 01:21:11.882595
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import hostplane.core.db.types

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "job_workers",
        sa.Column("id", sa.String(length=200), nullable=False),
        sa.Column("hostname", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column(
            "last_seen_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_job_workers")),
    )
    op.create_table(
        "payment_events",
        sa.Column("gateway", sa.String(length=32), nullable=False),
        sa.Column("event_id", sa.String(length=255), nullable=False),
        sa.Column("type", sa.String(length=100), nullable=False),
        sa.Column("reference", sa.String(length=255), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("topup_id", sa.String(length=26), nullable=True),
        sa.Column("paid", sa.Boolean(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=True),
        sa.Column("currency", sa.String(length=3), nullable=True),
        sa.Column("detail", sa.String(length=500), nullable=True),
        sa.Column(
            "payload",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "received_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column(
            "processed_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payment_events")),
        sa.UniqueConstraint("gateway", "event_id", name=op.f("uq_payment_events_gateway_event_id")),
    )
    with op.batch_alter_table("payment_events", schema=None) as batch_op:
        batch_op.create_index("ix_payment_events_status", ["status"], unique=False)

    op.create_table(
        "platform_config",
        sa.Column("key", sa.String(length=32), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column(
            "overrides",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("updated_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_by_user_id", sa.String(length=26), nullable=True),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_platform_config")),
    )
    op.create_table(
        "signing_keys",
        sa.Column("private_key_sealed", sa.Text(), nullable=False),
        sa.Column("public_key", sa.String(length=64), nullable=False),
        sa.Column("retired_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("not_after", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("created_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_signing_keys")),
    )
    op.create_table(
        "tenants",
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("slug", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("is_platform", sa.Boolean(), nullable=False),
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("created_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tenants")),
        sa.UniqueConstraint("slug", name=op.f("uq_tenants_slug")),
    )
    op.create_table(
        "alert_rules",
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("target", sa.String(length=16), nullable=False),
        sa.Column("target_id", sa.String(length=64), nullable=False),
        sa.Column("severity", sa.String(length=16), nullable=False),
        sa.Column(
            "conditions",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "actions",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("keep_open", sa.Boolean(), nullable=False),
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("created_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("tenant_id", sa.String(length=26), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_alert_rules_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alert_rules")),
    )
    with op.batch_alter_table("alert_rules", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_alert_rules_enabled"), ["enabled"], unique=False)
        batch_op.create_index(batch_op.f("ix_alert_rules_tenant_id"), ["tenant_id"], unique=False)

    op.create_table(
        "audit_chain_heads",
        sa.Column("chain", sa.String(length=40), nullable=False),
        sa.Column("tenant_id", sa.String(length=26), nullable=True),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("anchor_seq", sa.BigInteger(), nullable=False),
        sa.Column("anchor_hash", sa.String(length=64), nullable=False),
        sa.Column("pruned_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("updated_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_audit_chain_heads_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("chain", name=op.f("pk_audit_chain_heads")),
    )
    with op.batch_alter_table("audit_chain_heads", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_audit_chain_heads_tenant_id"), ["tenant_id"], unique=False
        )

    op.create_table(
        "audit_checkpoints",
        sa.Column("chain", sa.String(length=40), nullable=False),
        sa.Column("tenant_id", sa.String(length=26), nullable=True),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("anchor_seq", sa.BigInteger(), nullable=False),
        sa.Column("anchor_hash", sa.String(length=64), nullable=False),
        sa.Column("tampered_seq", sa.BigInteger(), nullable=True),
        sa.Column("tampered_reason", sa.String(length=300), nullable=True),
        sa.Column("mac", sa.String(length=64), nullable=False),
        sa.Column("updated_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_audit_checkpoints_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("chain", name=op.f("pk_audit_checkpoints")),
    )
    with op.batch_alter_table("audit_checkpoints", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_audit_checkpoints_tenant_id"), ["tenant_id"], unique=False
        )

    op.create_table(
        "audit_logs",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("chain", sa.String(length=40), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("actor_type", sa.String(length=16), nullable=False),
        sa.Column("actor_id", sa.String(length=64), nullable=True),
        sa.Column("user_id", sa.String(length=64), nullable=True),
        sa.Column("action", sa.String(length=100), nullable=False),
        sa.Column("resource_type", sa.String(length=64), nullable=False),
        sa.Column("resource_id", sa.String(length=200), nullable=True),
        sa.Column("ip_address", sa.String(length=64), nullable=True),
        sa.Column("user_agent", sa.String(length=500), nullable=True),
        sa.Column("request_id", sa.String(length=64), nullable=True),
        sa.Column(
            "metadata",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("created_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("tenant_id", sa.String(length=26), nullable=True),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_audit_logs_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_logs")),
        sa.UniqueConstraint("chain", "seq", name=op.f("uq_audit_logs_chain_seq")),
    )
    with op.batch_alter_table("audit_logs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_audit_logs_action"), ["action"], unique=False)
        batch_op.create_index(batch_op.f("ix_audit_logs_actor_id"), ["actor_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_audit_logs_created_at"), ["created_at"], unique=False)
        batch_op.create_index(
            "ix_audit_logs_resource", ["resource_type", "resource_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_audit_logs_tenant_id"), ["tenant_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_audit_logs_user_id"), ["user_id"], unique=False)

    op.create_table(
        "database_hosts",
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("engine", sa.String(length=16), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("port", sa.Integer(), nullable=False),
        sa.Column("public_host", sa.String(length=255), nullable=True),
        sa.Column("username", sa.String(length=100), nullable=False),
        sa.Column("password_sealed", sa.Text(), nullable=False),
        sa.Column("remote_pattern", sa.String(length=255), nullable=False),
        sa.Column("max_databases", sa.Integer(), nullable=True),
        sa.Column(
            "node_ids",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "location_ids",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("tenant_id", sa.String(length=26), nullable=False),
        sa.Column("created_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_database_hosts_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_database_hosts")),
        sa.UniqueConstraint("tenant_id", "name", name=op.f("uq_database_hosts_tenant_id_name")),
    )
    with op.batch_alter_table("database_hosts", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_database_hosts_tenant_id"), ["tenant_id"], unique=False
        )

    op.create_table(
        "idempotency_keys",
        sa.Column("caller", sa.String(length=80), nullable=False),
        sa.Column("scope", sa.String(length=64), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=False),
        sa.Column(
            "response",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("created_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("tenant_id", sa.String(length=26), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_idempotency_keys_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_idempotency_keys")),
        sa.UniqueConstraint(
            "tenant_id",
            "caller",
            "scope",
            "key",
            name=op.f("uq_idempotency_keys_tenant_id_caller_scope_key"),
        ),
    )
    with op.batch_alter_table("idempotency_keys", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_idempotency_keys_created_at"), ["created_at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_idempotency_keys_tenant_id"), ["tenant_id"], unique=False
        )

    op.create_table(
        "invoice_counters",
        sa.Column("tenant_id", sa.String(length=26), nullable=False),
        sa.Column("last_number", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_invoice_counters_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("tenant_id", name=op.f("pk_invoice_counters")),
    )
    op.create_table(
        "invoices",
        sa.Column("user_id", sa.String(length=26), nullable=False),
        sa.Column("number", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("subtotal", sa.BigInteger(), nullable=False),
        sa.Column("tax", sa.BigInteger(), nullable=False),
        sa.Column("total", sa.BigInteger(), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("source_id", sa.String(length=64), nullable=False),
        sa.Column("payment_method", sa.String(length=32), nullable=True),
        sa.Column("payment_reference", sa.String(length=255), nullable=True),
        sa.Column("due_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("paid_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("voided_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("created_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("tenant_id", sa.String(length=26), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_invoices_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_invoices")),
        sa.UniqueConstraint("tenant_id", "number", name=op.f("uq_invoices_tenant_id_number")),
        sa.UniqueConstraint(
            "tenant_id", "source", "source_id", name=op.f("uq_invoices_tenant_id_source_source_id")
        ),
    )
    with op.batch_alter_table("invoices", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_invoices_tenant_id"), ["tenant_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_invoices_user_id"), ["user_id"], unique=False)

    op.create_table(
        "jobs",
        sa.Column("tenant_id", sa.String(length=26), nullable=True),
        sa.Column("type", sa.String(length=100), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column(
            "args",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("target_id", sa.String(length=64), nullable=True),
        sa.Column("unique_key", sa.String(length=200), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("run_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("locked_by", sa.String(length=200), nullable=True),
        sa.Column(
            "locked_until", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column("started_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("finished_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("progress", sa.Integer(), nullable=False),
        sa.Column("progress_message", sa.String(length=500), nullable=True),
        sa.Column("error_code", sa.String(length=64), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("created_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_jobs_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_jobs")),
        sa.UniqueConstraint("unique_key", name=op.f("uq_jobs_unique_key")),
    )
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.create_index("ix_jobs_status_run_at", ["status", "run_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_jobs_target_id"), ["target_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_jobs_tenant_id"), ["tenant_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_jobs_type"), ["type"], unique=False)

    op.create_table(
        "ledger_accounts",
        sa.Column("owner", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("currency", sa.String(length=8), nullable=False),
        sa.Column("balance", sa.BigInteger(), nullable=False),
        sa.Column("allow_negative", sa.Boolean(), nullable=False),
        sa.Column("created_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("tenant_id", sa.String(length=26), nullable=False),
        sa.CheckConstraint(
            "allow_negative OR balance >= 0", name=op.f("ck_ledger_accounts_not_overdrawn")
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_ledger_accounts_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ledger_accounts")),
        sa.UniqueConstraint(
            "tenant_id", "owner", "name", name=op.f("uq_ledger_accounts_tenant_id_owner_name")
        ),
    )
    with op.batch_alter_table("ledger_accounts", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_ledger_accounts_tenant_id"), ["tenant_id"], unique=False
        )

    op.create_table(
        "ledger_transactions",
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("idempotency_key", sa.String(length=200), nullable=False),
        sa.Column("reference", sa.String(length=200), nullable=True),
        sa.Column("memo", sa.String(length=500), nullable=True),
        sa.Column("reverses_id", sa.String(length=26), nullable=True),
        sa.Column("actor_user_id", sa.String(length=40), nullable=True),
        sa.Column("created_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("tenant_id", sa.String(length=26), nullable=False),
        sa.ForeignKeyConstraint(
            ["reverses_id"],
            ["ledger_transactions.id"],
            name=op.f("fk_ledger_transactions_reverses_id_ledger_transactions"),
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_ledger_transactions_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ledger_transactions")),
        sa.UniqueConstraint("reverses_id", name=op.f("uq_ledger_transactions_reverses_id")),
        sa.UniqueConstraint(
            "tenant_id",
            "idempotency_key",
            name=op.f("uq_ledger_transactions_tenant_id_idempotency_key"),
        ),
    )
    with op.batch_alter_table("ledger_transactions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_ledger_transactions_kind"), ["kind"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_ledger_transactions_reference"), ["reference"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_ledger_transactions_tenant_id"), ["tenant_id"], unique=False
        )

    op.create_table(
        "locations",
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("tenant_id", sa.String(length=26), nullable=False),
        sa.Column("created_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_locations_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_locations")),
    )
    with op.batch_alter_table("locations", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_locations_tenant_id"), ["tenant_id"], unique=False)

    op.create_table(
        "payment_topups",
        sa.Column("user_id", sa.String(length=26), nullable=False),
        sa.Column("gateway", sa.String(length=32), nullable=False),
        sa.Column("method", sa.String(length=32), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("gateway_reference", sa.String(length=255), nullable=False),
        sa.Column("payment_url", sa.String(length=2048), nullable=False),
        sa.Column("paid_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("paid_event_id", sa.String(length=26), nullable=True),
        sa.Column("ledger_transaction_id", sa.String(length=26), nullable=True),
        sa.Column("invoice_id", sa.String(length=26), nullable=True),
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("created_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("tenant_id", sa.String(length=26), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_payment_topups_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payment_topups")),
        sa.UniqueConstraint(
            "gateway", "gateway_reference", name=op.f("uq_payment_topups_gateway_gateway_reference")
        ),
    )
    with op.batch_alter_table("payment_topups", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_payment_topups_tenant_id"), ["tenant_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_payment_topups_user_id"), ["user_id"], unique=False)

    op.create_table(
        "roles",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("description", sa.String(length=500), nullable=False),
        sa.Column(
            "permissions",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("builtin", sa.Boolean(), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.Column("require_two_factor", sa.Boolean(), nullable=False),
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("tenant_id", sa.String(length=26), nullable=True),
        sa.Column("created_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_roles_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_roles")),
        sa.UniqueConstraint("tenant_id", "name", name=op.f("uq_roles_tenant_id_name")),
    )
    with op.batch_alter_table("roles", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_roles_tenant_id"), ["tenant_id"], unique=False)
        batch_op.create_index(
            "uq_roles_builtin_name",
            ["name"],
            unique=True,
            sqlite_where=sa.text("tenant_id IS NULL"),
            postgresql_where=sa.text("tenant_id IS NULL"),
        )

    op.create_table(
        "system_events",
        sa.Column("tenant_id", sa.String(length=26), nullable=True),
        sa.Column("type", sa.String(length=100), nullable=False),
        sa.Column("subject_id", sa.String(length=64), nullable=True),
        sa.Column(
            "data",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("created_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_system_events_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_system_events")),
    )
    with op.batch_alter_table("system_events", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_system_events_created_at"), ["created_at"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_system_events_tenant_id"), ["tenant_id"], unique=False)
        batch_op.create_index("ix_system_events_type_id", ["type", "id"], unique=False)

    op.create_table(
        "templates",
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("docker_image", sa.String(length=255), nullable=False),
        sa.Column("start_command", sa.Text(), nullable=False),
        sa.Column("stop_command", sa.String(length=255), nullable=True),
        sa.Column(
            "ports",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "environment",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "required_variables",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "variables",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "features",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("install_script", sa.Text(), nullable=True),
        sa.Column("install_image", sa.String(length=255), nullable=True),
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("tenant_id", sa.String(length=26), nullable=False),
        sa.Column("created_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_templates_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_templates")),
    )
    with op.batch_alter_table("templates", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_templates_tenant_id"), ["tenant_id"], unique=False)

    op.create_table(
        "users",
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column(
            "email_key",
            sa.String(length=320),
            sa.Computed("lower(email)", persisted=True),
            nullable=False,
        ),
        sa.Column(
            "username_key",
            sa.String(length=64),
            sa.Computed("lower(username)", persisted=True),
            nullable=False,
        ),
        sa.Column("password_hash", sa.String(length=255), nullable=True),
        sa.Column("first_name", sa.String(length=100), nullable=True),
        sa.Column("last_name", sa.String(length=100), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("ban_reason", sa.String(length=500), nullable=True),
        sa.Column("banned_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column(
            "last_login_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column("totp_secret_sealed", sa.Text(), nullable=True),
        sa.Column(
            "totp_enabled_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column("totp_last_step", sa.BigInteger(), nullable=True),
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("tenant_id", sa.String(length=26), nullable=False),
        sa.Column("created_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_users_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("tenant_id", "email_key", name="uq_users_tenant_id_email_key"),
        sa.UniqueConstraint("tenant_id", "username_key", name="uq_users_tenant_id_username_key"),
    )
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_users_tenant_id"), ["tenant_id"], unique=False)

    op.create_table(
        "webhook_endpoints",
        sa.Column("url", sa.String(length=2048), nullable=False),
        sa.Column("description", sa.String(length=500), nullable=True),
        sa.Column(
            "events",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("disabled_reason", sa.String(length=32), nullable=True),
        sa.Column("secret_sealed", sa.Text(), nullable=False),
        sa.Column("previous_secret_sealed", sa.Text(), nullable=True),
        sa.Column(
            "previous_secret_expires_at",
            hostplane.core.db.types.UTCDateTime(timezone=True),
            nullable=True,
        ),
        sa.Column("consecutive_failures", sa.Integer(), nullable=False),
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("created_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("tenant_id", sa.String(length=26), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_webhook_endpoints_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_endpoints")),
    )
    with op.batch_alter_table("webhook_endpoints", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_webhook_endpoints_tenant_id"), ["tenant_id"], unique=False
        )

    op.create_table(
        "webhook_events",
        sa.Column("type", sa.String(length=100), nullable=False),
        sa.Column(
            "data",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("created_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("tenant_id", sa.String(length=26), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_webhook_events_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_events")),
    )
    with op.batch_alter_table("webhook_events", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_webhook_events_tenant_id"), ["tenant_id"], unique=False
        )

    op.create_table(
        "alerts",
        sa.Column("rule_id", sa.String(length=26), nullable=True),
        sa.Column("server_id", sa.String(length=26), nullable=True),
        sa.Column("node_id", sa.String(length=26), nullable=True),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("severity", sa.String(length=16), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("message", sa.String(length=1000), nullable=False),
        sa.Column(
            "metadata",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("open_key", sa.String(length=200), nullable=True),
        sa.Column("resolved", sa.Boolean(), nullable=False),
        sa.Column("resolved_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("resolved_by", sa.String(length=64), nullable=True),
        sa.Column("created_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("tenant_id", sa.String(length=26), nullable=False),
        sa.ForeignKeyConstraint(
            ["rule_id"],
            ["alert_rules.id"],
            name=op.f("fk_alerts_rule_id_alert_rules"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_alerts_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alerts")),
        sa.UniqueConstraint("open_key", name=op.f("uq_alerts_open_key")),
    )
    with op.batch_alter_table("alerts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_alerts_node_id"), ["node_id"], unique=False)
        batch_op.create_index(
            "ix_alerts_resolved_created", ["resolved", "created_at"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_alerts_rule_id"), ["rule_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_alerts_server_id"), ["server_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_alerts_severity"), ["severity"], unique=False)
        batch_op.create_index(batch_op.f("ix_alerts_tenant_id"), ["tenant_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_alerts_type"), ["type"], unique=False)

    op.create_table(
        "api_keys",
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("public_id", sa.String(length=8), nullable=False),
        sa.Column("secret_hash", sa.String(length=64), nullable=False),
        sa.Column(
            "scopes",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "allowed_ips",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("created_by_id", sa.String(length=26), nullable=True),
        sa.Column("expires_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column(
            "last_used_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column("revoked_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("tenant_id", sa.String(length=26), nullable=False),
        sa.Column("created_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["created_by_id"],
            ["users.id"],
            name=op.f("fk_api_keys_created_by_id_users"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_api_keys_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("public_id", name=op.f("uq_api_keys_public_id")),
    )
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_api_keys_created_by_id"), ["created_by_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_api_keys_tenant_id"), ["tenant_id"], unique=False)

    op.create_table(
        "auth_sessions",
        sa.Column("user_id", sa.String(length=26), nullable=False),
        sa.Column("ip", sa.String(length=64), nullable=True),
        sa.Column("user_agent", sa.String(length=500), nullable=True),
        sa.Column(
            "last_used_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column("expires_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("revoked_reason", sa.String(length=64), nullable=True),
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("tenant_id", sa.String(length=26), nullable=False),
        sa.Column("created_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_auth_sessions_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_auth_sessions_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_auth_sessions")),
    )
    with op.batch_alter_table("auth_sessions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_auth_sessions_tenant_id"), ["tenant_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_auth_sessions_user_id"), ["user_id"], unique=False)

    op.create_table(
        "daily_rewards",
        sa.Column("user_id", sa.String(length=26), nullable=False),
        sa.Column(
            "last_claimed_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column("claims", sa.Integer(), nullable=False),
        sa.Column("streak", sa.Integer(), nullable=False),
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("tenant_id", sa.String(length=26), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_daily_rewards_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_daily_rewards_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_daily_rewards")),
        sa.UniqueConstraint("user_id", name=op.f("uq_daily_rewards_user_id")),
    )
    with op.batch_alter_table("daily_rewards", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_daily_rewards_tenant_id"), ["tenant_id"], unique=False)

    op.create_table(
        "external_identities",
        sa.Column("user_id", sa.String(length=26), nullable=False),
        sa.Column("issuer", sa.String(length=500), nullable=False),
        sa.Column("subject", sa.String(length=255), nullable=False),
        sa.Column(
            "last_synced_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("tenant_id", sa.String(length=26), nullable=False),
        sa.Column("created_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_external_identities_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_external_identities_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_external_identities")),
        sa.UniqueConstraint(
            "issuer", "subject", name=op.f("uq_external_identities_issuer_subject")
        ),
    )
    with op.batch_alter_table("external_identities", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_external_identities_tenant_id"), ["tenant_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_external_identities_user_id"), ["user_id"], unique=False
        )

    op.create_table(
        "invoice_lines",
        sa.Column("invoice_id", sa.String(length=26), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("description", sa.String(length=500), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("unit_amount", sa.BigInteger(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("tenant_id", sa.String(length=26), nullable=False),
        sa.ForeignKeyConstraint(
            ["invoice_id"],
            ["invoices.id"],
            name=op.f("fk_invoice_lines_invoice_id_invoices"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_invoice_lines_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_invoice_lines")),
    )
    with op.batch_alter_table("invoice_lines", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_invoice_lines_invoice_id"), ["invoice_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_invoice_lines_tenant_id"), ["tenant_id"], unique=False)

    op.create_table(
        "ledger_entries",
        sa.Column("transaction_id", sa.String(length=26), nullable=False),
        sa.Column("account_id", sa.String(length=26), nullable=False),
        sa.Column("currency", sa.String(length=8), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("balance_after", sa.BigInteger(), nullable=False),
        sa.Column("created_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("tenant_id", sa.String(length=26), nullable=False),
        sa.CheckConstraint("amount <> 0", name=op.f("ck_ledger_entries_moves_something")),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["ledger_accounts.id"],
            name=op.f("fk_ledger_entries_account_id_ledger_accounts"),
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_ledger_entries_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["transaction_id"],
            ["ledger_transactions.id"],
            name=op.f("fk_ledger_entries_transaction_id_ledger_transactions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ledger_entries")),
    )
    with op.batch_alter_table("ledger_entries", schema=None) as batch_op:
        batch_op.create_index(
            "ix_ledger_entries_account_created", ["account_id", "created_at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_ledger_entries_tenant_id"), ["tenant_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_ledger_entries_transaction_id"), ["transaction_id"], unique=False
        )

    op.create_table(
        "login_challenges",
        sa.Column("user_id", sa.String(length=26), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("expires_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("used_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("tenant_id", sa.String(length=26), nullable=False),
        sa.Column("created_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_login_challenges_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_login_challenges_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_login_challenges")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_login_challenges_token_hash")),
    )
    with op.batch_alter_table("login_challenges", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_login_challenges_tenant_id"), ["tenant_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_login_challenges_user_id"), ["user_id"], unique=False)

    op.create_table(
        "nodes",
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("location_id", sa.String(length=26), nullable=True),
        sa.Column("hostname", sa.String(length=255), nullable=False),
        sa.Column("public_address", sa.String(length=255), nullable=False),
        sa.Column("max_memory_mb", sa.Integer(), nullable=False),
        sa.Column("max_cpu_cores", sa.Float(), nullable=False),
        sa.Column("max_disk_mb", sa.Integer(), nullable=False),
        sa.Column("memory_overallocate", sa.Integer(), server_default="0", nullable=False),
        sa.Column("disk_overallocate", sa.Integer(), server_default="0", nullable=False),
        sa.Column("cpu_overallocate", sa.Integer(), server_default="0", nullable=False),
        sa.Column("role", sa.String(length=32), server_default="node", nullable=False),
        sa.Column("port_range_start", sa.Integer(), nullable=False),
        sa.Column("port_range_end", sa.Integer(), nullable=False),
        sa.Column("secret_hash", sa.String(length=64), nullable=False),
        sa.Column("deployment_token_hash", sa.String(length=64), nullable=True),
        sa.Column(
            "deployment_token_expires_at",
            hostplane.core.db.types.UTCDateTime(timezone=True),
            nullable=True,
        ),
        sa.Column(
            "last_seen_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column(
            "health",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("agent_session_id", sa.String(length=26), nullable=True),
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("tenant_id", sa.String(length=26), nullable=False),
        sa.Column("created_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["location_id"],
            ["locations.id"],
            name=op.f("fk_nodes_location_id_locations"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_nodes_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_nodes")),
    )
    with op.batch_alter_table("nodes", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_nodes_location_id"), ["location_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_nodes_tenant_id"), ["tenant_id"], unique=False)

    op.create_table(
        "plans",
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("currency_type", sa.String(length=8), nullable=False),
        sa.Column("price", sa.BigInteger(), nullable=False),
        sa.Column("period_days", sa.Integer(), nullable=False),
        sa.Column("memory_mb", sa.Integer(), nullable=False),
        sa.Column("cpu_cores", sa.Float(), nullable=False),
        sa.Column("disk_mb", sa.Integer(), nullable=False),
        sa.Column("databases", sa.Integer(), nullable=False),
        sa.Column("backups", sa.Integer(), nullable=False),
        sa.Column("allocations", sa.Integer(), nullable=False),
        sa.Column("template_id", sa.String(length=26), nullable=False),
        sa.Column(
            "location_ids",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "node_ids",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("tenant_id", sa.String(length=26), nullable=False),
        sa.Column("created_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["template_id"],
            ["templates.id"],
            name=op.f("fk_plans_template_id_templates"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_plans_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_plans")),
    )
    with op.batch_alter_table("plans", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_plans_template_id"), ["template_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_plans_tenant_id"), ["tenant_id"], unique=False)

    op.create_table(
        "recovery_codes",
        sa.Column("user_id", sa.String(length=26), nullable=False),
        sa.Column("code_hash", sa.String(length=64), nullable=False),
        sa.Column("used_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("tenant_id", sa.String(length=26), nullable=False),
        sa.Column("created_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_recovery_codes_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_recovery_codes_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_recovery_codes")),
    )
    with op.batch_alter_table("recovery_codes", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_recovery_codes_tenant_id"), ["tenant_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_recovery_codes_user_id"), ["user_id"], unique=False)

    op.create_table(
        "referral_codes",
        sa.Column("user_id", sa.String(length=26), nullable=False),
        sa.Column("code", sa.String(length=32), nullable=False),
        sa.Column("created_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("tenant_id", sa.String(length=26), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_referral_codes_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_referral_codes_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_referral_codes")),
        sa.UniqueConstraint("tenant_id", "code", name=op.f("uq_referral_codes_tenant_id_code")),
        sa.UniqueConstraint("user_id", name=op.f("uq_referral_codes_user_id")),
    )
    with op.batch_alter_table("referral_codes", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_referral_codes_tenant_id"), ["tenant_id"], unique=False
        )

    op.create_table(
        "referrals",
        sa.Column("referrer_user_id", sa.String(length=26), nullable=False),
        sa.Column("referred_user_id", sa.String(length=26), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("clears_on", sa.String(length=32), nullable=False),
        sa.Column("referrer_coins", sa.Integer(), nullable=False),
        sa.Column("referred_coins", sa.Integer(), nullable=False),
        sa.Column("created_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("cleared_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("tenant_id", sa.String(length=26), nullable=False),
        sa.ForeignKeyConstraint(
            ["referred_user_id"],
            ["users.id"],
            name=op.f("fk_referrals_referred_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["referrer_user_id"],
            ["users.id"],
            name=op.f("fk_referrals_referrer_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_referrals_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_referrals")),
        sa.UniqueConstraint("referred_user_id", name=op.f("uq_referrals_referred_user_id")),
    )
    with op.batch_alter_table("referrals", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_referrals_referrer_user_id"), ["referrer_user_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_referrals_tenant_id"), ["tenant_id"], unique=False)

    op.create_table(
        "resource_grants",
        sa.Column("resource_type", sa.String(length=32), nullable=False),
        sa.Column("resource_id", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.String(length=26), nullable=False),
        sa.Column(
            "permissions",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("granted_by", sa.String(length=26), nullable=True),
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("tenant_id", sa.String(length=26), nullable=False),
        sa.Column("created_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_resource_grants_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_resource_grants_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_resource_grants")),
        sa.UniqueConstraint(
            "resource_type",
            "resource_id",
            "user_id",
            name=op.f("uq_resource_grants_resource_type_resource_id_user_id"),
        ),
    )
    with op.batch_alter_table("resource_grants", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_resource_grants_resource_id"), ["resource_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_resource_grants_tenant_id"), ["tenant_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_resource_grants_user_id"), ["user_id"], unique=False)

    op.create_table(
        "server_databases",
        sa.Column("server_id", sa.String(length=26), nullable=False),
        sa.Column("host_id", sa.String(length=26), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("username", sa.String(length=32), nullable=False),
        sa.Column("password_sealed", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("tenant_id", sa.String(length=26), nullable=False),
        sa.Column("created_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["host_id"],
            ["database_hosts.id"],
            name=op.f("fk_server_databases_host_id_database_hosts"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_server_databases_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_server_databases")),
        sa.UniqueConstraint("host_id", "name", name=op.f("uq_server_databases_host_id_name")),
        sa.UniqueConstraint(
            "host_id", "username", name=op.f("uq_server_databases_host_id_username")
        ),
    )
    with op.batch_alter_table("server_databases", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_server_databases_host_id"), ["host_id"], unique=False)
        batch_op.create_index("ix_server_databases_server_id", ["server_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_server_databases_tenant_id"), ["tenant_id"], unique=False
        )

    op.create_table(
        "tenant_role_settings",
        sa.Column("role_id", sa.String(length=26), nullable=False),
        sa.Column("require_two_factor", sa.Boolean(), nullable=False),
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("tenant_id", sa.String(length=26), nullable=False),
        sa.Column("created_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["role_id"],
            ["roles.id"],
            name=op.f("fk_tenant_role_settings_role_id_roles"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_tenant_role_settings_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tenant_role_settings")),
        sa.UniqueConstraint(
            "tenant_id", "role_id", name=op.f("uq_tenant_role_settings_tenant_id_role_id")
        ),
    )
    with op.batch_alter_table("tenant_role_settings", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_tenant_role_settings_role_id"), ["role_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_tenant_role_settings_tenant_id"), ["tenant_id"], unique=False
        )

    op.create_table(
        "user_roles",
        sa.Column("user_id", sa.String(length=26), nullable=False),
        sa.Column("role_id", sa.String(length=26), nullable=False),
        sa.ForeignKeyConstraint(
            ["role_id"], ["roles.id"], name=op.f("fk_user_roles_role_id_roles"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_user_roles_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("user_id", "role_id", name=op.f("pk_user_roles")),
    )
    op.create_table(
        "webhook_deliveries",
        sa.Column("endpoint_id", sa.String(length=26), nullable=False),
        sa.Column("event_id", sa.String(length=26), nullable=False),
        sa.Column("event_type", sa.String(length=100), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column(
            "next_attempt_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column("locked_by", sa.String(length=200), nullable=True),
        sa.Column(
            "locked_until", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column("last_status_code", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.String(length=500), nullable=True),
        sa.Column("finished_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("created_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("tenant_id", sa.String(length=26), nullable=False),
        sa.ForeignKeyConstraint(
            ["endpoint_id"],
            ["webhook_endpoints.id"],
            name=op.f("fk_webhook_deliveries_endpoint_id_webhook_endpoints"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["event_id"],
            ["webhook_events.id"],
            name=op.f("fk_webhook_deliveries_event_id_webhook_events"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_webhook_deliveries_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_deliveries")),
    )
    with op.batch_alter_table("webhook_deliveries", schema=None) as batch_op:
        batch_op.create_index(
            "ix_webhook_deliveries_endpoint_status", ["endpoint_id", "status", "id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_webhook_deliveries_event_id"), ["event_id"], unique=False
        )
        batch_op.create_index(
            "ix_webhook_deliveries_status_next", ["status", "next_attempt_at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_webhook_deliveries_tenant_id"), ["tenant_id"], unique=False
        )

    op.create_table(
        "alert_actions",
        sa.Column("alert_id", sa.String(length=26), nullable=False),
        sa.Column("event", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column(
            "config",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column(
            "next_attempt_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column("locked_by", sa.String(length=200), nullable=True),
        sa.Column(
            "locked_until", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column("last_error", sa.String(length=500), nullable=True),
        sa.Column("finished_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("created_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("tenant_id", sa.String(length=26), nullable=False),
        sa.ForeignKeyConstraint(
            ["alert_id"],
            ["alerts.id"],
            name=op.f("fk_alert_actions_alert_id_alerts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_alert_actions_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alert_actions")),
    )
    with op.batch_alter_table("alert_actions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_alert_actions_alert_id"), ["alert_id"], unique=False)
        batch_op.create_index(
            "ix_alert_actions_status_next", ["status", "next_attempt_at"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_alert_actions_tenant_id"), ["tenant_id"], unique=False)

    op.create_table(
        "pending_server_deletes",
        sa.Column("node_id", sa.String(length=26), nullable=False),
        sa.Column("server_id", sa.String(length=26), nullable=False),
        sa.Column("server_uuid", sa.String(length=36), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.String(length=500), nullable=True),
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("tenant_id", sa.String(length=26), nullable=False),
        sa.Column("created_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["node_id"],
            ["nodes.id"],
            name=op.f("fk_pending_server_deletes_node_id_nodes"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_pending_server_deletes_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pending_server_deletes")),
        sa.UniqueConstraint(
            "node_id", "server_id", name=op.f("uq_pending_server_deletes_node_id_server_id")
        ),
    )
    with op.batch_alter_table("pending_server_deletes", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_pending_server_deletes_node_id"), ["node_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_pending_server_deletes_tenant_id"), ["tenant_id"], unique=False
        )

    op.create_table(
        "refresh_tokens",
        sa.Column("session_id", sa.String(length=26), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("expires_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("used_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("tenant_id", sa.String(length=26), nullable=False),
        sa.Column("created_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["auth_sessions.id"],
            name=op.f("fk_refresh_tokens_session_id_auth_sessions"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_refresh_tokens_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_refresh_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_refresh_tokens_token_hash")),
    )
    with op.batch_alter_table("refresh_tokens", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_refresh_tokens_session_id"), ["session_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_refresh_tokens_tenant_id"), ["tenant_id"], unique=False
        )

    op.create_table(
        "servers",
        sa.Column("uuid", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("owner_id", sa.String(length=26), nullable=True),
        sa.Column("node_id", sa.String(length=26), nullable=False),
        sa.Column("template_id", sa.String(length=26), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("allocated_memory_mb", sa.Integer(), nullable=False),
        sa.Column("allocated_cpu_cores", sa.Float(), nullable=False),
        sa.Column("allocated_disk_mb", sa.Integer(), nullable=False),
        sa.Column("primary_port", sa.Integer(), nullable=True),
        sa.Column("network_mode", sa.String(length=32), nullable=False),
        sa.Column(
            "environment",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("container_name", sa.String(length=100), nullable=False),
        sa.Column("container_id", sa.String(length=100), nullable=True),
        sa.Column("cpu_usage", sa.Float(), nullable=True),
        sa.Column("memory_usage_mb", sa.Integer(), nullable=True),
        sa.Column("disk_usage_mb", sa.Integer(), nullable=True),
        sa.Column("network_sent", sa.BigInteger(), nullable=True),
        sa.Column("network_received", sa.BigInteger(), nullable=True),
        sa.Column("stats_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("database_limit", sa.Integer(), server_default="0", nullable=False),
        sa.Column("restart_policy", sa.String(length=16), nullable=False),
        sa.Column("max_crash_count", sa.Integer(), nullable=False),
        sa.Column("crash_count", sa.Integer(), nullable=False),
        sa.Column(
            "last_crash_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column(
            "recent_crashes",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("last_exit_code", sa.Integer(), nullable=True),
        sa.Column(
            "status_changed_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column("status_reason", sa.String(length=500), nullable=True),
        sa.Column(
            "suspended_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column("suspended_by_user_id", sa.String(length=26), nullable=True),
        sa.Column("suspension_reason", sa.String(length=500), nullable=True),
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("tenant_id", sa.String(length=26), nullable=False),
        sa.Column("created_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["node_id"], ["nodes.id"], name=op.f("fk_servers_node_id_nodes"), ondelete="RESTRICT"
        ),
        sa.ForeignKeyConstraint(
            ["owner_id"], ["users.id"], name=op.f("fk_servers_owner_id_users"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["template_id"],
            ["templates.id"],
            name=op.f("fk_servers_template_id_templates"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_servers_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_servers")),
        sa.UniqueConstraint("uuid", name=op.f("uq_servers_uuid")),
    )
    with op.batch_alter_table("servers", schema=None) as batch_op:
        batch_op.create_index("ix_servers_node_id_status", ["node_id", "status"], unique=False)
        batch_op.create_index(batch_op.f("ix_servers_owner_id"), ["owner_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_servers_status"), ["status"], unique=False)
        batch_op.create_index(batch_op.f("ix_servers_template_id"), ["template_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_servers_tenant_id"), ["tenant_id"], unique=False)

    op.create_table(
        "webhook_attempts",
        sa.Column("delivery_id", sa.String(length=26), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
        sa.Column("response_body", sa.Text(), nullable=True),
        sa.Column("error", sa.String(length=500), nullable=True),
        sa.Column("created_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("tenant_id", sa.String(length=26), nullable=False),
        sa.ForeignKeyConstraint(
            ["delivery_id"],
            ["webhook_deliveries.id"],
            name=op.f("fk_webhook_attempts_delivery_id_webhook_deliveries"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_webhook_attempts_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_attempts")),
    )
    with op.batch_alter_table("webhook_attempts", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_webhook_attempts_delivery_id"), ["delivery_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_webhook_attempts_tenant_id"), ["tenant_id"], unique=False
        )

    op.create_table(
        "backups",
        sa.Column("server_id", sa.String(length=26), nullable=False),
        sa.Column("node_id", sa.String(length=26), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("locked", sa.Boolean(), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=True),
        sa.Column("checksum", sa.String(length=80), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_by_user_id", sa.String(length=26), nullable=True),
        sa.Column(
            "completed_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("tenant_id", sa.String(length=26), nullable=False),
        sa.Column("created_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["node_id"], ["nodes.id"], name=op.f("fk_backups_node_id_nodes"), ondelete="RESTRICT"
        ),
        sa.ForeignKeyConstraint(
            ["server_id"],
            ["servers.id"],
            name=op.f("fk_backups_server_id_servers"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_backups_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_backups")),
    )
    with op.batch_alter_table("backups", schema=None) as batch_op:
        batch_op.create_index(
            "ix_backups_server_id_created_at", ["server_id", "created_at"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_backups_tenant_id"), ["tenant_id"], unique=False)

    op.create_table(
        "file_link_uses",
        sa.Column("link_id", sa.String(length=26), nullable=False),
        sa.Column("server_id", sa.String(length=26), nullable=False),
        sa.Column("user_id", sa.String(length=26), nullable=False),
        sa.Column("purpose", sa.String(length=16), nullable=False),
        sa.Column("used_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("tenant_id", sa.String(length=26), nullable=False),
        sa.ForeignKeyConstraint(
            ["server_id"],
            ["servers.id"],
            name=op.f("fk_file_link_uses_server_id_servers"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_file_link_uses_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("link_id", name=op.f("pk_file_link_uses")),
    )
    with op.batch_alter_table("file_link_uses", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_file_link_uses_expires_at"), ["expires_at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_file_link_uses_server_id"), ["server_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_file_link_uses_tenant_id"), ["tenant_id"], unique=False
        )

    op.create_table(
        "scheduled_tasks",
        sa.Column("server_id", sa.String(length=26), nullable=False),
        sa.Column("owner_id", sa.String(length=26), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column(
            "payload",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("schedule", sa.String(length=120), nullable=False),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("only_when_online", sa.Boolean(), nullable=False),
        sa.Column("catch_up", sa.String(length=16), nullable=False),
        sa.Column(
            "steps",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("last_run_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("next_run_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("run_count", sa.Integer(), nullable=False),
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("tenant_id", sa.String(length=26), nullable=False),
        sa.Column("created_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["server_id"],
            ["servers.id"],
            name=op.f("fk_scheduled_tasks_server_id_servers"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_scheduled_tasks_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_scheduled_tasks")),
    )
    with op.batch_alter_table("scheduled_tasks", schema=None) as batch_op:
        batch_op.create_index(
            "ix_scheduled_tasks_enabled_next_run_at", ["enabled", "next_run_at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_scheduled_tasks_server_id"), ["server_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_scheduled_tasks_tenant_id"), ["tenant_id"], unique=False
        )

    op.create_table(
        "server_allocations",
        sa.Column("server_id", sa.String(length=26), nullable=False),
        sa.Column("node_id", sa.String(length=26), nullable=False),
        sa.Column("container_port", sa.Integer(), nullable=False),
        sa.Column("host_port", sa.Integer(), nullable=False),
        sa.Column("is_primary", sa.Boolean(), nullable=False),
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("tenant_id", sa.String(length=26), nullable=False),
        sa.Column("created_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["node_id"],
            ["nodes.id"],
            name=op.f("fk_server_allocations_node_id_nodes"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["server_id"],
            ["servers.id"],
            name=op.f("fk_server_allocations_server_id_servers"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_server_allocations_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_server_allocations")),
        sa.UniqueConstraint(
            "node_id", "host_port", name=op.f("uq_server_allocations_node_id_host_port")
        ),
        sa.UniqueConstraint(
            "server_id",
            "container_port",
            name=op.f("uq_server_allocations_server_id_container_port"),
        ),
    )
    with op.batch_alter_table("server_allocations", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_server_allocations_server_id"), ["server_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_server_allocations_tenant_id"), ["tenant_id"], unique=False
        )

    op.create_table(
        "server_logs",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("server_id", sa.String(length=26), nullable=False),
        sa.Column("stream", sa.String(length=16), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.Column("created_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("tenant_id", sa.String(length=26), nullable=False),
        sa.ForeignKeyConstraint(
            ["server_id"],
            ["servers.id"],
            name=op.f("fk_server_logs_server_id_servers"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_server_logs_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_server_logs")),
    )
    with op.batch_alter_table("server_logs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_server_logs_created_at"), ["created_at"], unique=False)
        batch_op.create_index("ix_server_logs_server_id_seq", ["server_id", "seq"], unique=False)
        batch_op.create_index(batch_op.f("ix_server_logs_tenant_id"), ["tenant_id"], unique=False)

    op.create_table(
        "server_subscriptions",
        sa.Column("server_id", sa.String(length=26), nullable=True),
        sa.Column("user_id", sa.String(length=26), nullable=True),
        sa.Column("plan_id", sa.String(length=26), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("currency_type", sa.String(length=8), nullable=False),
        sa.Column("price", sa.BigInteger(), nullable=False),
        sa.Column("period_seconds", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("charge_key", sa.String(length=200), nullable=True),
        sa.Column("renewals", sa.Integer(), nullable=False),
        sa.Column("changes", sa.Integer(), nullable=False),
        sa.Column(
            "suspended_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column("failure_reason", sa.String(length=500), nullable=True),
        sa.Column("ended_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("tenant_id", sa.String(length=26), nullable=False),
        sa.Column("created_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["plan_id"],
            ["plans.id"],
            name=op.f("fk_server_subscriptions_plan_id_plans"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["server_id"],
            ["servers.id"],
            name=op.f("fk_server_subscriptions_server_id_servers"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_server_subscriptions_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_server_subscriptions_user_id_users"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_server_subscriptions")),
        sa.UniqueConstraint("server_id", name=op.f("uq_server_subscriptions_server_id")),
    )
    with op.batch_alter_table("server_subscriptions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_server_subscriptions_plan_id"), ["plan_id"], unique=False
        )
        batch_op.create_index(
            "ix_server_subscriptions_status_expires_at", ["status", "expires_at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_server_subscriptions_tenant_id"), ["tenant_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_server_subscriptions_user_id"), ["user_id"], unique=False
        )

    op.create_table(
        "server_transfers",
        sa.Column("server_id", sa.String(length=26), nullable=False),
        sa.Column("active_server_id", sa.String(length=26), nullable=True),
        sa.Column("source_node_id", sa.String(length=26), nullable=False),
        sa.Column("target_node_id", sa.String(length=26), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("bytes_done", sa.BigInteger(), nullable=False),
        sa.Column("archive_bytes", sa.BigInteger(), nullable=True),
        sa.Column("checksum", sa.String(length=80), nullable=True),
        sa.Column("route", sa.String(length=16), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("requested_by_user_id", sa.String(length=26), nullable=True),
        sa.Column("finished_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("tenant_id", sa.String(length=26), nullable=False),
        sa.Column("created_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["server_id"],
            ["servers.id"],
            name=op.f("fk_server_transfers_server_id_servers"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["source_node_id"],
            ["nodes.id"],
            name=op.f("fk_server_transfers_source_node_id_nodes"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["target_node_id"],
            ["nodes.id"],
            name=op.f("fk_server_transfers_target_node_id_nodes"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_server_transfers_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_server_transfers")),
        sa.UniqueConstraint("active_server_id", name=op.f("uq_server_transfers_active_server_id")),
    )
    with op.batch_alter_table("server_transfers", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_server_transfers_server_id"), ["server_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_server_transfers_tenant_id"), ["tenant_id"], unique=False
        )

    op.create_table(
        "scheduled_task_runs",
        sa.Column("task_id", sa.String(length=26), nullable=False),
        sa.Column("server_id", sa.String(length=26), nullable=False),
        sa.Column("trigger", sa.String(length=16), nullable=False),
        sa.Column(
            "scheduled_for", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("started_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("finished_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column(
            "deadline_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column(
            "steps",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("job_id", sa.String(length=26), nullable=True),
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("tenant_id", sa.String(length=26), nullable=False),
        sa.Column("created_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", hostplane.core.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["task_id"],
            ["scheduled_tasks.id"],
            name=op.f("fk_scheduled_task_runs_task_id_scheduled_tasks"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_scheduled_task_runs_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_scheduled_task_runs")),
        sa.UniqueConstraint(
            "task_id", "scheduled_for", name=op.f("uq_scheduled_task_runs_task_id_scheduled_for")
        ),
    )
    with op.batch_alter_table("scheduled_task_runs", schema=None) as batch_op:
        batch_op.create_index(
            "ix_scheduled_task_runs_status_deadline_at", ["status", "deadline_at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_scheduled_task_runs_task_id"), ["task_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_scheduled_task_runs_tenant_id"), ["tenant_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("scheduled_task_runs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_scheduled_task_runs_tenant_id"))
        batch_op.drop_index(batch_op.f("ix_scheduled_task_runs_task_id"))
        batch_op.drop_index("ix_scheduled_task_runs_status_deadline_at")

    op.drop_table("scheduled_task_runs")
    with op.batch_alter_table("server_transfers", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_server_transfers_tenant_id"))
        batch_op.drop_index(batch_op.f("ix_server_transfers_server_id"))

    op.drop_table("server_transfers")
    with op.batch_alter_table("server_subscriptions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_server_subscriptions_user_id"))
        batch_op.drop_index(batch_op.f("ix_server_subscriptions_tenant_id"))
        batch_op.drop_index("ix_server_subscriptions_status_expires_at")
        batch_op.drop_index(batch_op.f("ix_server_subscriptions_plan_id"))

    op.drop_table("server_subscriptions")
    with op.batch_alter_table("server_logs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_server_logs_tenant_id"))
        batch_op.drop_index("ix_server_logs_server_id_seq")
        batch_op.drop_index(batch_op.f("ix_server_logs_created_at"))

    op.drop_table("server_logs")
    with op.batch_alter_table("server_allocations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_server_allocations_tenant_id"))
        batch_op.drop_index(batch_op.f("ix_server_allocations_server_id"))

    op.drop_table("server_allocations")
    with op.batch_alter_table("scheduled_tasks", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_scheduled_tasks_tenant_id"))
        batch_op.drop_index(batch_op.f("ix_scheduled_tasks_server_id"))
        batch_op.drop_index("ix_scheduled_tasks_enabled_next_run_at")

    op.drop_table("scheduled_tasks")
    with op.batch_alter_table("file_link_uses", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_file_link_uses_tenant_id"))
        batch_op.drop_index(batch_op.f("ix_file_link_uses_server_id"))
        batch_op.drop_index(batch_op.f("ix_file_link_uses_expires_at"))

    op.drop_table("file_link_uses")
    with op.batch_alter_table("backups", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_backups_tenant_id"))
        batch_op.drop_index("ix_backups_server_id_created_at")

    op.drop_table("backups")
    with op.batch_alter_table("webhook_attempts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_webhook_attempts_tenant_id"))
        batch_op.drop_index(batch_op.f("ix_webhook_attempts_delivery_id"))

    op.drop_table("webhook_attempts")
    with op.batch_alter_table("servers", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_servers_tenant_id"))
        batch_op.drop_index(batch_op.f("ix_servers_template_id"))
        batch_op.drop_index(batch_op.f("ix_servers_status"))
        batch_op.drop_index(batch_op.f("ix_servers_owner_id"))
        batch_op.drop_index("ix_servers_node_id_status")

    op.drop_table("servers")
    with op.batch_alter_table("refresh_tokens", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_refresh_tokens_tenant_id"))
        batch_op.drop_index(batch_op.f("ix_refresh_tokens_session_id"))

    op.drop_table("refresh_tokens")
    with op.batch_alter_table("pending_server_deletes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_pending_server_deletes_tenant_id"))
        batch_op.drop_index(batch_op.f("ix_pending_server_deletes_node_id"))

    op.drop_table("pending_server_deletes")
    with op.batch_alter_table("alert_actions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_alert_actions_tenant_id"))
        batch_op.drop_index("ix_alert_actions_status_next")
        batch_op.drop_index(batch_op.f("ix_alert_actions_alert_id"))

    op.drop_table("alert_actions")
    with op.batch_alter_table("webhook_deliveries", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_webhook_deliveries_tenant_id"))
        batch_op.drop_index("ix_webhook_deliveries_status_next")
        batch_op.drop_index(batch_op.f("ix_webhook_deliveries_event_id"))
        batch_op.drop_index("ix_webhook_deliveries_endpoint_status")

    op.drop_table("webhook_deliveries")
    op.drop_table("user_roles")
    with op.batch_alter_table("tenant_role_settings", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_tenant_role_settings_tenant_id"))
        batch_op.drop_index(batch_op.f("ix_tenant_role_settings_role_id"))

    op.drop_table("tenant_role_settings")
    with op.batch_alter_table("server_databases", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_server_databases_tenant_id"))
        batch_op.drop_index("ix_server_databases_server_id")
        batch_op.drop_index(batch_op.f("ix_server_databases_host_id"))

    op.drop_table("server_databases")
    with op.batch_alter_table("resource_grants", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_resource_grants_user_id"))
        batch_op.drop_index(batch_op.f("ix_resource_grants_tenant_id"))
        batch_op.drop_index(batch_op.f("ix_resource_grants_resource_id"))

    op.drop_table("resource_grants")
    with op.batch_alter_table("referrals", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_referrals_tenant_id"))
        batch_op.drop_index(batch_op.f("ix_referrals_referrer_user_id"))

    op.drop_table("referrals")
    with op.batch_alter_table("referral_codes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_referral_codes_tenant_id"))

    op.drop_table("referral_codes")
    with op.batch_alter_table("recovery_codes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_recovery_codes_user_id"))
        batch_op.drop_index(batch_op.f("ix_recovery_codes_tenant_id"))

    op.drop_table("recovery_codes")
    with op.batch_alter_table("plans", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_plans_tenant_id"))
        batch_op.drop_index(batch_op.f("ix_plans_template_id"))

    op.drop_table("plans")
    with op.batch_alter_table("nodes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_nodes_tenant_id"))
        batch_op.drop_index(batch_op.f("ix_nodes_location_id"))

    op.drop_table("nodes")
    with op.batch_alter_table("login_challenges", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_login_challenges_user_id"))
        batch_op.drop_index(batch_op.f("ix_login_challenges_tenant_id"))

    op.drop_table("login_challenges")
    with op.batch_alter_table("ledger_entries", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ledger_entries_transaction_id"))
        batch_op.drop_index(batch_op.f("ix_ledger_entries_tenant_id"))
        batch_op.drop_index("ix_ledger_entries_account_created")

    op.drop_table("ledger_entries")
    with op.batch_alter_table("invoice_lines", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_invoice_lines_tenant_id"))
        batch_op.drop_index(batch_op.f("ix_invoice_lines_invoice_id"))

    op.drop_table("invoice_lines")
    with op.batch_alter_table("external_identities", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_external_identities_user_id"))
        batch_op.drop_index(batch_op.f("ix_external_identities_tenant_id"))

    op.drop_table("external_identities")
    with op.batch_alter_table("daily_rewards", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_daily_rewards_tenant_id"))

    op.drop_table("daily_rewards")
    with op.batch_alter_table("auth_sessions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_auth_sessions_user_id"))
        batch_op.drop_index(batch_op.f("ix_auth_sessions_tenant_id"))

    op.drop_table("auth_sessions")
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_api_keys_tenant_id"))
        batch_op.drop_index(batch_op.f("ix_api_keys_created_by_id"))

    op.drop_table("api_keys")
    with op.batch_alter_table("alerts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_alerts_type"))
        batch_op.drop_index(batch_op.f("ix_alerts_tenant_id"))
        batch_op.drop_index(batch_op.f("ix_alerts_severity"))
        batch_op.drop_index(batch_op.f("ix_alerts_server_id"))
        batch_op.drop_index(batch_op.f("ix_alerts_rule_id"))
        batch_op.drop_index("ix_alerts_resolved_created")
        batch_op.drop_index(batch_op.f("ix_alerts_node_id"))

    op.drop_table("alerts")
    with op.batch_alter_table("webhook_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_webhook_events_tenant_id"))

    op.drop_table("webhook_events")
    with op.batch_alter_table("webhook_endpoints", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_webhook_endpoints_tenant_id"))

    op.drop_table("webhook_endpoints")
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_users_tenant_id"))

    op.drop_table("users")
    with op.batch_alter_table("templates", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_templates_tenant_id"))

    op.drop_table("templates")
    with op.batch_alter_table("system_events", schema=None) as batch_op:
        batch_op.drop_index("ix_system_events_type_id")
        batch_op.drop_index(batch_op.f("ix_system_events_tenant_id"))
        batch_op.drop_index(batch_op.f("ix_system_events_created_at"))

    op.drop_table("system_events")
    with op.batch_alter_table("roles", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_roles_builtin_name",
            sqlite_where=sa.text("tenant_id IS NULL"),
            postgresql_where=sa.text("tenant_id IS NULL"),
        )
        batch_op.drop_index(batch_op.f("ix_roles_tenant_id"))

    op.drop_table("roles")
    with op.batch_alter_table("payment_topups", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_payment_topups_user_id"))
        batch_op.drop_index(batch_op.f("ix_payment_topups_tenant_id"))

    op.drop_table("payment_topups")
    with op.batch_alter_table("locations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_locations_tenant_id"))

    op.drop_table("locations")
    with op.batch_alter_table("ledger_transactions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ledger_transactions_tenant_id"))
        batch_op.drop_index(batch_op.f("ix_ledger_transactions_reference"))
        batch_op.drop_index(batch_op.f("ix_ledger_transactions_kind"))

    op.drop_table("ledger_transactions")
    with op.batch_alter_table("ledger_accounts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ledger_accounts_tenant_id"))

    op.drop_table("ledger_accounts")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_jobs_type"))
        batch_op.drop_index(batch_op.f("ix_jobs_tenant_id"))
        batch_op.drop_index(batch_op.f("ix_jobs_target_id"))
        batch_op.drop_index("ix_jobs_status_run_at")

    op.drop_table("jobs")
    with op.batch_alter_table("invoices", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_invoices_user_id"))
        batch_op.drop_index(batch_op.f("ix_invoices_tenant_id"))

    op.drop_table("invoices")
    op.drop_table("invoice_counters")
    with op.batch_alter_table("idempotency_keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_idempotency_keys_tenant_id"))
        batch_op.drop_index(batch_op.f("ix_idempotency_keys_created_at"))

    op.drop_table("idempotency_keys")
    with op.batch_alter_table("database_hosts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_database_hosts_tenant_id"))

    op.drop_table("database_hosts")
    with op.batch_alter_table("audit_logs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_logs_user_id"))
        batch_op.drop_index(batch_op.f("ix_audit_logs_tenant_id"))
        batch_op.drop_index("ix_audit_logs_resource")
        batch_op.drop_index(batch_op.f("ix_audit_logs_created_at"))
        batch_op.drop_index(batch_op.f("ix_audit_logs_actor_id"))
        batch_op.drop_index(batch_op.f("ix_audit_logs_action"))

    op.drop_table("audit_logs")
    with op.batch_alter_table("audit_checkpoints", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_checkpoints_tenant_id"))

    op.drop_table("audit_checkpoints")
    with op.batch_alter_table("audit_chain_heads", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_chain_heads_tenant_id"))

    op.drop_table("audit_chain_heads")
    with op.batch_alter_table("alert_rules", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_alert_rules_tenant_id"))
        batch_op.drop_index(batch_op.f("ix_alert_rules_enabled"))

    op.drop_table("alert_rules")
    op.drop_table("tenants")
    op.drop_table("signing_keys")
    op.drop_table("platform_config")
    with op.batch_alter_table("payment_events", schema=None) as batch_op:
        batch_op.drop_index("ix_payment_events_status")

    op.drop_table("payment_events")
    op.drop_table("job_workers")
