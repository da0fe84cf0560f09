"""Configuration: ``HOSTPLANE_*`` environment variables over an optional TOML file.

Precedence, highest first: values passed in code (the CLI's flags), environment
variables, the TOML file, defaults. The TOML file is ``$HOSTPLANE_CONFIG`` or
``<data dir>/hostplane.toml`` when it exists. Nested groups use ``__`` in
environment variables (``HOSTPLANE_JOBS__MAX_ATTEMPTS=3``) and tables in TOML
(``[jobs]``).
"""

from __future__ import annotations

import ipaddress
import os
from contextvars import ContextVar
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal, Self

from limits import parse_many
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

Environment = Literal["development", "test", "production"]

# Values that mean "nobody set this". Refused outside development.
PLACEHOLDER_SECRETS = frozenset(
    {"", "change-me", "changeme", "secret", "dev-secret", "please-change"}
)
MIN_SECRET_LENGTH = 32

_toml_file: ContextVar[Path | None] = ContextVar("hostplane_toml_file", default=None)


def default_data_dir() -> Path:
    """Where the embedded default keeps its database and files."""
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "share"
    return base / "hostplane"


class JobSettings(BaseModel):
    """The durable job queue and its workers."""

    poll_interval_seconds: float = Field(default=0.5, gt=0)
    concurrency: int = Field(default=4, ge=1, le=256)
    max_attempts: int = Field(default=5, ge=1, le=100)
    backoff_base_seconds: float = Field(default=2.0, ge=0)
    backoff_max_seconds: float = Field(default=3600.0, ge=0)
    # A claimed job whose worker vanished becomes claimable again after this.
    lease_seconds: float = Field(default=300.0, gt=0)


class FileSettings(BaseModel):
    """The file manager's limits on the panel (the node has its own, see the agent)."""

    upload_max_bytes: int = Field(default=100 * 2**20, ge=1)
    # Text read or written inline as JSON (``/files/content``, ``/files/write``).
    content_max_bytes: int = Field(default=5 * 2**20, ge=1)


class BackupSettings(BaseModel):
    """Server backups: how many, how often, how long one may take."""

    # Per server; when full, a new backup evicts the oldest unlocked one.
    limit_per_server: int = Field(default=10, ge=1, le=1000)
    # At most ``throttle_count`` new backups per server in ``throttle_seconds``.
    throttle_count: int = Field(default=2, ge=1)
    throttle_seconds: int = Field(default=600, ge=0)
    timeout_seconds: float = Field(default=6 * 3600, gt=0)


class ServerSettings(BaseModel):
    """Commands to agents and how long a server may stay in a passing state."""

    # How long a request waits for the agent to accept or refuse a command.
    command_answer_seconds: float = Field(default=30.0, gt=0)
    # The sweeper ends a state that lasts longer than this (installing ends
    # install_failed, the others stopped), with a reason on the server.
    install_timeout_seconds: float = Field(default=1800.0, gt=0)
    start_timeout_seconds: float = Field(default=120.0, gt=0)
    stop_timeout_seconds: float = Field(default=120.0, gt=0)
    transfer_timeout_seconds: float = Field(default=6 * 3600.0, gt=0)


class ScheduleSettings(BaseModel):
    """Scheduled tasks: how often the scheduler looks for due runs."""

    tick_seconds: float = Field(default=5.0, gt=0, le=60)
    enabled: bool = True


class DatabaseSettings(BaseModel):
    """Server databases on MariaDB, MySQL and PostgreSQL hosts."""

    # Connecting to a host and each statement on it; a host slower than this is unavailable.
    connect_timeout_seconds: float = Field(default=5.0, gt=0, le=120)


class WebhookSettings(BaseModel):
    """Outbound webhooks (``[webhooks]``, ``HOSTPLANE_WEBHOOKS__*``); also alert webhook actions."""

    # Receivers on private, loopback or link-local addresses; off by default
    # so a tenant cannot make the panel call the operator's own network.
    allow_private_destinations: bool = False
    # An endpoint is disabled after this many events in a row failed for good.
    max_consecutive_failures: int = Field(default=15, ge=1, le=10_000)
    timeout_seconds: float = Field(default=10.0, gt=0, le=60)
    # Seconds before each retry; the attempts are one more than its length.
    retry_schedule_seconds: list[float] = Field(
        default_factory=lambda: [
            5.0,
            300.0,
            1800.0,
            7200.0,
            18000.0,
            36000.0,
            50400.0,
            72000.0,
            86400.0,
        ]
    )
    # Each delay is moved by up to this fraction either way.
    retry_jitter: float = Field(default=0.1, ge=0, le=0.5)
    # A delivery whose worker vanished is taken again after this.
    lease_seconds: float = Field(default=60.0, gt=0)
    poll_interval_seconds: float = Field(default=1.0, gt=0)
    concurrency: int = Field(default=8, ge=1, le=256)
    # Deliveries, their attempts and the system event log are kept this long.
    retention_days: int = Field(default=30, ge=1, le=3650)

    @field_validator("retry_schedule_seconds")
    @classmethod
    def _delays(cls, value: list[float]) -> list[float]:
        if len(value) > 50 or any(delay < 0 or delay > 7 * 86400 for delay in value):
            raise ValueError("give at most 50 delays, each between 0 and 604800 seconds")
        return value


class SmtpSettings(BaseModel):
    """The mail server alert e-mails go through (``[smtp]``, ``HOSTPLANE_SMTP__*``).

    Without ``host`` e-mail actions are refused when a rule is saved.
    """

    model_config = ConfigDict(populate_by_name=True)

    host: str | None = None
    port: int = Field(default=587, ge=1, le=65535)
    username: str | None = None
    password: SecretStr | None = None
    # ``from`` in TOML and HOSTPLANE_SMTP__FROM; a Python keyword, hence the alias.
    sender: str = Field(default="hostplane@localhost", alias="from", min_length=3)
    starttls: bool = True
    timeout_seconds: float = Field(default=20.0, gt=0, le=120)


class AlertSettings(BaseModel):
    """The alert evaluator and the delivery of alert actions (``HOSTPLANE_ALERTS__*``)."""

    evaluate_seconds: float = Field(default=2.0, gt=0, le=3600)
    # Stats older than this say nothing about a server (it stopped, or its agent went away).
    stats_stale_seconds: float = Field(default=60.0, gt=0)
    # Seconds before each retry of a failed action; attempts are one more than its length.
    action_retry_schedule_seconds: list[float] = Field(
        default_factory=lambda: [10.0, 60.0, 300.0, 1800.0, 7200.0]
    )
    action_timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    # An action whose worker vanished mid-send is taken again after this.
    action_lease_seconds: float = Field(default=120.0, gt=0)

    @field_validator("action_retry_schedule_seconds")
    @classmethod
    def _delays(cls, value: list[float]) -> list[float]:
        if len(value) > 20 or any(delay < 0 or delay > 86400 for delay in value):
            raise ValueError("give at most 20 delays, each between 0 and 86400 seconds")
        return value


class GatewayLimits(BaseModel):
    """What every payment gateway's section shares: currency, top-up limits, timeout."""

    # The currency charged; empty means the credits currency (it must be that one).
    currency: str | None = Field(default=None, min_length=3, max_length=3)
    # Limits of one top-up, in major units of the credits currency.
    min_amount: Decimal = Field(default=Decimal("1"), gt=0)
    max_amount: Decimal = Field(default=Decimal("10000"), gt=0)
    timeout_seconds: float = Field(default=20.0, gt=0, le=120)

    @model_validator(mode="after")
    def _limits(self) -> Self:
        if self.min_amount > self.max_amount:
            raise ValueError("min_amount must not be above max_amount")
        return self


class StripeSettings(GatewayLimits):
    """Stripe Checkout (``HOSTPLANE_PAYMENTS__STRIPE__*``); offered once both secrets are set."""

    secret_key: SecretStr | None = None
    webhook_secret: SecretStr | None = None
    api_base: str = "https://api.stripe.com"

    @property
    def configured(self) -> bool:
        return bool(
            self.secret_key
            and self.secret_key.get_secret_value()
            and self.webhook_secret
            and self.webhook_secret.get_secret_value()
        )


class RazorpaySettings(GatewayLimits):
    """Razorpay payment links for UPI (``HOSTPLANE_PAYMENTS__RAZORPAY__*``); offered once
    the key pair and the webhook secret are set."""

    key_id: str | None = None
    key_secret: SecretStr | None = None
    webhook_secret: SecretStr | None = None
    api_base: str = "https://api.razorpay.com"
    max_amount: Decimal = Field(default=Decimal("100000"), gt=0)

    @property
    def configured(self) -> bool:
        return bool(
            self.key_id
            and self.key_secret
            and self.key_secret.get_secret_value()
            and self.webhook_secret
            and self.webhook_secret.get_secret_value()
        )


class PaymentSettings(BaseModel):
    """Credit top-ups through payment gateways (``[payments]``, ``HOSTPLANE_PAYMENTS__*``).

    A gateway without its keys is not offered; a panel with none still runs.
    """

    stripe: StripeSettings = Field(default_factory=StripeSettings)
    razorpay: RazorpaySettings = Field(default_factory=RazorpaySettings)
    # Where the gateway sends the payer back; empty: ``public_url`` + /billing.
    success_url: str | None = None
    cancel_url: str | None = None
    # The seller's name and address printed on invoices.
    invoice_issuer: str = "hostplane"
    invoice_issuer_address: str = ""


class BillingSettings(BaseModel):
    """Plans bought with the wallet: expiry and provisioning (``HOSTPLANE_BILLING__*``)."""

    # A server whose term ended is suspended this long after the end, and deleted
    # ``expiry_grace_hours`` after the end; renewing before the deletion unsuspends it.
    suspend_after_hours: float = Field(default=0.0, ge=0, le=24 * 365)
    expiry_grace_hours: float = Field(default=72.0, ge=0, le=24 * 365)
    # Installs of a deployed server tried before the deploy is refunded.
    provision_attempts: int = Field(default=3, ge=1, le=20)


class EconomySettings(BaseModel):
    """The wallet's two currencies: coins are earned, credits are bought."""

    # ISO 4217 code of credits. Fixed for the life of an installation: balances
    # are kept in its minor units.
    credits_currency: str = Field(default="USD", pattern=r"^[A-Z]{3}$")


class ExternalIssuer(BaseModel):
    """An identity provider whose tokens ``POST /api/auth/sync`` accepts."""

    name: str
    issuer: str
    audience: str
    jwks_url: str | None = None
    shared_secret: SecretStr | None = None
    algorithms: list[str] = Field(default_factory=lambda: ["RS256", "ES256", "EdDSA"])
    # Which tenant synced users join (slug); the default tenant when unset.
    tenant: str | None = None


class IdentitySettings(BaseModel):
    """Tokens, sessions and sign-up."""

    issuer: str = "hostplane"
    access_token_ttl_seconds: int = Field(default=900, ge=60, le=86400)
    refresh_token_ttl_days: int = Field(default=30, ge=1, le=365)
    registration_open: bool = True
    external_issuers: list[ExternalIssuer] = Field(default_factory=list)


class AuthSettings(BaseModel):
    """How requests' callers are resolved (``[auth]``, ``HOSTPLANE_AUTH__*``)."""

    # How long a resolved caller (permissions, tenant, account and session
    # state) may answer for its credential without a database read. Every
    # change to what it depends on drops it at once, in this process and,
    # through the event bus, in every other; this is only the backstop should
    # an event be lost. 0 resolves every request from the database.
    principal_cache_seconds: float = Field(default=30.0, ge=0, le=300)
    principal_cache_entries: int = Field(default=10_000, ge=1, le=1_000_000)


class RateLimitSettings(BaseModel):
    """Requests per caller and route group (``[rate_limits]``, ``HOSTPLANE_RATE_LIMITS__*``).

    Limits use the notation of the ``limits`` library: ``"10/minute"``,
    ``"1000 per 15 minutes"``. Counters are in memory, or in Redis when
    ``redis_url`` is set so that every replica shares them.
    """

    enabled: bool = True
    auth: str = "10/minute"
    default: str = "200/minute"
    health: str = "1000/minute"
    # Failed logins per account (email within a tenant), whatever addresses
    # they come from; once spent, the account refuses logins until the window
    # that started with the first failure ends. See docs/decisions.md.
    login_failures_per_account: str = "10 per 15 minutes"
    # Namespace of the counters, for a Redis shared with other deployments.
    key_prefix: str = Field(default="hostplane:ratelimit", min_length=1)

    @field_validator("auth", "default", "health", "login_failures_per_account")
    @classmethod
    def _one_limit(cls, value: str) -> str:
        # A typo must stop the process at start, not surface as a 500 later.
        items = parse_many(value)
        if len(items) != 1 or items[0].amount < 1:
            raise ValueError(f"{value!r}: give one limit of at least 1, like '200/minute'")
        return value


class HttpSettings(BaseModel):
    """How the panel's HTTP server reads its clients (``[http]``, ``HOSTPLANE_HTTP__*``)."""

    # Addresses or networks (``10.0.0.0/8``) of reverse proxies whose
    # ``X-Forwarded-For``/``X-Real-IP``/``X-Forwarded-Proto`` are believed.
    # Empty: those headers are ignored and the peer address is the client.
    trusted_proxies: list[str] = Field(default_factory=list)

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for item in value:
            try:
                ipaddress.ip_network(item.strip(), strict=False)
            except ValueError:
                raise ValueError(
                    f"{item!r} is not an IP address or network (like 10.0.0.1 or 10.0.0.0/8)"
                ) from None
        return [item.strip() for item in value]

    # permessage-deflate on WebSockets (consoles, agents). Off by default: the
    # panel compresses every frame once per client (ten console viewers, ten
    # compressions of the same lines), which costs more CPU than the rest of
    # the console path; turn it on for viewers on slow links.
    websocket_compression: bool = False


class Settings(BaseSettings):
    """Every setting hostplane reads. Nothing else calls ``os.getenv``."""

    model_config = SettingsConfigDict(
        env_prefix="HOSTPLANE_",
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )

    environment: Environment = "production"
    data_dir: Path = Field(default_factory=default_data_dir)
    database_url: str = ""
    database_echo: bool = False
    redis_url: str | None = None
    secret_key: SecretStr = SecretStr("change-me")

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    public_url: str | None = None
    cors_origins: list[str] = Field(default_factory=list)

    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "console", "json"] = "auto"

    event_channel_prefix: str = "hostplane"
    jobs: JobSettings = Field(default_factory=JobSettings)
    rate_limits: RateLimitSettings = Field(default_factory=RateLimitSettings)
    identity: IdentitySettings = Field(default_factory=IdentitySettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    backups: BackupSettings = Field(default_factory=BackupSettings)
    files: FileSettings = Field(default_factory=FileSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    servers: ServerSettings = Field(default_factory=ServerSettings)
    schedules: ScheduleSettings = Field(default_factory=ScheduleSettings)
    databases: DatabaseSettings = Field(default_factory=DatabaseSettings)
    webhooks: WebhookSettings = Field(default_factory=WebhookSettings)
    smtp: SmtpSettings = Field(default_factory=SmtpSettings)
    alerts: AlertSettings = Field(default_factory=AlertSettings)
    payments: PaymentSettings = Field(default_factory=PaymentSettings)

    billing: BillingSettings = Field(default_factory=BillingSettings)
    economy: EconomySettings = Field(default_factory=EconomySettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        toml_path = _toml_file.get()
        if toml_path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_path))
        return tuple(sources)

    @field_validator("database_url")
    @classmethod
    def _async_driver(cls, value: str) -> str:
        # Accept the URLs operators already have and pick the async driver.
        for plain, driver in (
            ("postgresql://", "postgresql+asyncpg://"),
            ("postgres://", "postgresql+asyncpg://"),
            ("sqlite://", "sqlite+aiosqlite://"),
        ):
            if value.startswith(plain):
                return driver + value[len(plain) :]
        return value

    @model_validator(mode="after")
    def _defaults_and_safety(self) -> Settings:
        if not self.database_url:
            self.database_url = f"sqlite+aiosqlite:///{self.data_dir / 'hostplane.db'}"
        if not self.database_url.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise ValueError("database_url must be a sqlite:// or postgresql:// URL")
        secret = self.secret_key.get_secret_value()
        if self.environment != "development" and (
            secret.lower() in PLACEHOLDER_SECRETS or len(secret) < MIN_SECRET_LENGTH
        ):
            raise ValueError(
                "secret_key is a placeholder or shorter than "
                f"{MIN_SECRET_LENGTH} characters; set HOSTPLANE_SECRET_KEY "
                "(or run `hostplane up` once, which writes one to the data folder)"
            )
        return self

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def effective_log_format(self) -> Literal["console", "json"]:
        if self.log_format != "auto":
            return self.log_format
        return "console" if self.environment == "development" else "json"


def config_file_for(data_dir: Path | None) -> Path | None:
    """The TOML file to read, if any: ``$HOSTPLANE_CONFIG`` or the data folder's."""
    explicit = os.environ.get("HOSTPLANE_CONFIG")
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise FileNotFoundError(f"HOSTPLANE_CONFIG points to {path}, which is not a file")
        return path
    folder = data_dir or Path(os.environ.get("HOSTPLANE_DATA_DIR") or default_data_dir())
    candidate = folder / "hostplane.toml"
    return candidate if candidate.is_file() else None


def load_settings(*, data_dir: Path | None = None, **overrides: Any) -> Settings:
    """Build the settings the way every command does.

    ``overrides`` are values that beat the environment and the file (the CLI's
    flags); ``None`` values are ignored so an absent flag changes nothing.
    """
    explicit = {key: value for key, value in overrides.items() if value is not None}
    if data_dir is not None:
        explicit["data_dir"] = data_dir
    token = _toml_file.set(config_file_for(data_dir))
    try:
        return Settings(**explicit)
    finally:
        _toml_file.reset(token)


def redact_url(url: str) -> str:
    """A database or Redis URL without its password, safe to print."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    credentials, _, host = rest.rpartition("@")
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if user else f"{scheme}://***@{host}"
