"""The runtime configuration and the bodies of the operator routes.

:class:`RuntimeConfig` is the whole configuration with every field set;
:class:`ConfigPatch` mirrors it with every field optional (a PATCH names only
what changes). Both speak camelCase on the wire.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from limits import parse_many
from pydantic import Field, field_serializer, field_validator

from hostplane.core.config import Settings
from hostplane.core.schemas import ApiInput, ApiModel

DEFAULT_MAINTENANCE_MESSAGE = "The panel is down for maintenance. Please try again shortly."
MESSAGE_MAX = 500
# Catalogue prices are bounded so a typo (an extra five zeros) is refused.
MAX_COINS = 10_000_000
MAX_CREDITS = Decimal("100000")


def _one_limit(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        items = parse_many(value)
    except ValueError:
        items = []
    if len(items) != 1 or items[0].amount < 1:
        raise ValueError(f"{value[:40]!r}: give one limit of at least 1, like '200/minute'")
    return value


class Maintenance(ApiModel):
    enabled: bool = False
    message: str = Field(default=DEFAULT_MAINTENANCE_MESSAGE, min_length=1, max_length=MESSAGE_MAX)
    retry_after_seconds: int = Field(
        default=600, ge=1, le=86_400, description="Sent as Retry-After while enabled."
    )


class Registration(ApiModel):
    open: bool = True


class Price(ApiModel):
    """A paid extra's price in both currencies: coins (earned, whole) and credits (bought)."""

    coins: int = Field(default=0, ge=0, le=MAX_COINS)
    credits: Decimal = Field(default=Decimal(0), ge=0, le=MAX_CREDITS, decimal_places=2)

    @field_serializer("credits")
    def _credits_number(self, value: Decimal) -> float:
        # Shown as a JSON number with two decimals; never used in arithmetic as a float.
        return float(value)


class Prices(ApiModel):
    extra_allocation: Price = Field(default_factory=Price, description="One more port.")
    extra_backup_slot: Price = Field(default_factory=Price, description="One more backup.")
    extra_database: Price = Field(default_factory=Price, description="One more database.")


class RateLimits(ApiModel):
    auth: str = "10/minute"
    default: str = "200/minute"

    _valid = field_validator("auth", "default")(_one_limit)


class ResourceDefaults(ApiModel):
    """What a new server gets when its request leaves a resource out."""

    memory_mb: int = Field(default=1024, ge=16, le=10_000_000)
    cpu_cores: float = Field(default=1.0, gt=0, le=1024)
    disk_mb: int = Field(default=10_240, ge=16, le=100_000_000)


class Economy(ApiModel):
    """What activity earns and what credits buy in coins."""

    daily_reward_coins: int = Field(default=10, ge=0, le=MAX_COINS)
    daily_streak_bonus_coins: int = Field(
        default=0, ge=0, le=MAX_COINS, description="Added per day of an unbroken streak."
    )
    daily_streak_max_days: int = Field(
        default=7, ge=1, le=365, description="The streak bonus stops growing after this."
    )
    referral_referrer_coins: int = Field(default=100, ge=0, le=MAX_COINS)
    referral_referred_coins: int = Field(default=50, ge=0, le=MAX_COINS)
    referral_clears_on: Literal["first_credit_purchase", "claim"] = Field(
        default="first_credit_purchase",
        description="When a referral's rewards are paid: the referred user's first credit "
        "purchase, or at once when the code is claimed.",
    )
    coins_per_credit: int = Field(
        default=100,
        ge=0,
        le=MAX_COINS,
        description="Coins one whole credit converts to (0 turns conversion off). "
        "Credits never convert back.",
    )


class RuntimeConfig(ApiModel):
    maintenance: Maintenance = Field(default_factory=Maintenance)
    registration: Registration = Field(default_factory=Registration)
    prices: Prices = Field(default_factory=Prices)
    rate_limits: RateLimits = Field(default_factory=RateLimits)
    default_limits: ResourceDefaults = Field(default_factory=ResourceDefaults)
    economy: Economy = Field(default_factory=Economy)


def defaults_from(settings: Settings) -> RuntimeConfig:
    """The configuration before any operator change: the static settings' values."""
    return RuntimeConfig(
        registration=Registration(open=settings.identity.registration_open),
        rate_limits=RateLimits(
            auth=settings.rate_limits.auth, default=settings.rate_limits.default
        ),
    )


class ConfigOut(RuntimeConfig):
    version: int = Field(description="Grows by one with every change.")
    updated_at: datetime | None
    updated_by_user_id: str | None


# --- PATCH bodies: the same shape, every field optional ---------------------------------------


class MaintenancePatch(ApiInput):
    enabled: bool | None = None
    message: str | None = Field(default=None, min_length=1, max_length=MESSAGE_MAX)
    retry_after_seconds: int | None = Field(default=None, ge=1, le=86_400)


class RegistrationPatch(ApiInput):
    open: bool | None = None


class PricePatch(ApiInput):
    coins: int | None = Field(default=None, ge=0, le=MAX_COINS)
    credits: Decimal | None = Field(default=None, ge=0, le=MAX_CREDITS, decimal_places=2)


class PricesPatch(ApiInput):
    extra_allocation: PricePatch | None = None
    extra_backup_slot: PricePatch | None = None
    extra_database: PricePatch | None = None


class RateLimitsPatch(ApiInput):
    auth: str | None = Field(default=None, max_length=100)
    default: str | None = Field(default=None, max_length=100)

    _valid = field_validator("auth", "default")(_one_limit)


class ResourceDefaultsPatch(ApiInput):
    memory_mb: int | None = Field(default=None, ge=16, le=10_000_000)
    cpu_cores: float | None = Field(default=None, gt=0, le=1024)
    disk_mb: int | None = Field(default=None, ge=16, le=100_000_000)


class EconomyPatch(ApiInput):
    daily_reward_coins: int | None = Field(default=None, ge=0, le=MAX_COINS)
    daily_streak_bonus_coins: int | None = Field(default=None, ge=0, le=MAX_COINS)
    daily_streak_max_days: int | None = Field(default=None, ge=1, le=365)
    referral_referrer_coins: int | None = Field(default=None, ge=0, le=MAX_COINS)
    referral_referred_coins: int | None = Field(default=None, ge=0, le=MAX_COINS)
    referral_clears_on: Literal["first_credit_purchase", "claim"] | None = None
    coins_per_credit: int | None = Field(default=None, ge=0, le=MAX_COINS)


class ConfigPatch(ApiInput):
    """Only the fields given change; ``null`` is refused (a setting always has a value)."""

    maintenance: MaintenancePatch | None = None
    registration: RegistrationPatch | None = None
    prices: PricesPatch | None = None
    rate_limits: RateLimitsPatch | None = None
    default_limits: ResourceDefaultsPatch | None = None
    economy: EconomyPatch | None = None

    def changes(self) -> dict[str, Any]:
        """The given fields, snake_case, nested (explicit nulls are refused by the route)."""
        return self.model_dump(by_alias=False, exclude_unset=True, mode="json")


class PublicConfig(ApiModel):
    """What any client may read (Aura's ``/settings/system/config``)."""

    maintenance: Maintenance
    registration_open: bool
    prices: Prices


# --- statistics and health ---------------------------------------------------------------------


class Stats(ApiModel):
    """Catalyst's fields first; the rest say where the figures come from."""

    total_servers: int
    running_servers: int
    total_nodes: int
    online_nodes: int
    total_users: int
    total_memory_mb: int = Field(description="Sum of the nodes' memory.")
    used_memory_mb: int = Field(
        description="Memory the running servers use, as their agents last reported."
    )
    total_cpu_cores: float
    used_cpu_cores: float = Field(
        description="CPU the running servers use, as their agents last reported (100% = 1 core)."
    )
    allocated_memory_mb: int = Field(description="Memory promised to every server.")
    allocated_cpu_cores: float
    suspended_servers: int
    servers_by_status: dict[str, int]


PartState = Literal["ok", "degraded", "down"]


class NodeHealth(ApiModel):
    id: str
    name: str
    status: Literal["online", "offline"]
    agent_connected: bool
    last_seen_at: datetime | None
    # The agent's last health report (cpu, memory, disk, containers), if any.
    report: dict[str, Any] | None


class JobsHealth(ApiModel):
    status: PartState
    backlog: int = Field(description="Jobs waiting to run now (queued, due).")
    running: int
    failed: int = Field(description="Jobs that failed for good.")
    failed_last_hour: int
    workers: int = Field(description="Workers that reported in the last 45 s.")


class DiskHealth(ApiModel):
    status: PartState
    free_mb: int
    total_mb: int
    free_percent: float


class Health(ApiModel):
    """Catalyst's shape, with each part's state; ``degraded`` names the parts at fault."""

    status: Literal["healthy", "degraded", "unhealthy"]
    degraded: list[str]
    database: Literal["connected", "disconnected"]
    redis: Literal["connected", "disconnected", "not_configured"]
    event_bus: Literal["connected", "disconnected"]
    nodes: dict[str, int]
    node_details: list[NodeHealth]
    jobs: JobsHealth
    disk: DiskHealth
    maintenance: bool
    uptime: int
