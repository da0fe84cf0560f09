"""Catalyst's alert and alert-rule shapes (camelCase), with hostplane's additions."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from hostplane.core.schemas import ApiInput, ApiModel

AlertType = Literal["resource_threshold", "node_offline", "server_crashed"]
Severity = Literal["info", "warning", "critical"]
Metric = Literal["cpu", "memory", "disk"]
Operator = Literal[">", "<", ">=", "<=", "=="]
Target = Literal["server", "node"]
MAX_ACTIONS = 10
MAX_RECIPIENTS = 20


class Conditions(ApiInput):
    """``metric``/``operator``/``value`` for resource thresholds; ``duration`` (seconds) is
    how long the condition must hold before the alert fires (for ``node_offline``: how
    long without a heartbeat, default 90)."""

    metric: Metric | None = None
    operator: Operator | None = None
    value: float | None = Field(default=None, ge=0, le=100_000)
    duration: int | None = Field(default=None, ge=0, le=7 * 86400)


class WebhookAction(ApiInput):
    type: Literal["webhook"]
    url: str = Field(min_length=1, max_length=2048)


def _address(value: str) -> str:
    value = value.strip()
    local, _, domain = value.rpartition("@")
    if not local or "." not in domain or len(value) > 254 or any(c in value for c in ' \r\n<>,;"'):
        raise ValueError(f"{value!r} is not an e-mail address")
    return value


class EmailAction(ApiInput):
    type: Literal["email"]
    to: list[str] = Field(min_length=1, max_length=MAX_RECIPIENTS)

    @field_validator("to", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("to")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(_address(item) for item in value))


Action = Annotated[WebhookAction | EmailAction, Field(discriminator="type")]


def _check_rule(type_: str, target: str, conditions: Conditions | None) -> None:
    if type_ == "node_offline" and target != "node":
        raise ValueError("node_offline rules target nodes (target: node)")
    if type_ in ("resource_threshold", "server_crashed") and target != "server":
        raise ValueError(f"{type_} rules target servers (target: server)")
    if type_ == "resource_threshold" and (
        conditions is None or None in (conditions.metric, conditions.operator, conditions.value)
    ):
        raise ValueError("resource_threshold rules need conditions.metric, operator and value")


class AlertRuleCreate(ApiInput):
    name: str = Field(min_length=1, max_length=100)
    type: AlertType
    target: Target | None = Field(
        default=None, description="server or node; defaults from the type."
    )
    target_id: str = Field(default="*", min_length=1, max_length=64)
    severity: Severity = "warning"
    conditions: Conditions = Field(default_factory=Conditions)
    actions: list[Action] = Field(default_factory=list, max_length=MAX_ACTIONS)
    enabled: bool = True
    keep_open: bool = Field(
        default=False,
        description="Keep an alert open after its condition clears (else the system resolves it).",
    )

    @model_validator(mode="after")
    def _consistent(self) -> AlertRuleCreate:
        if self.target is None:
            self.target = "node" if self.type == "node_offline" else "server"
        _check_rule(self.type, self.target, self.conditions)
        return self


class AlertRuleUpdate(ApiInput):
    name: str | None = Field(default=None, min_length=1, max_length=100)
    target_id: str | None = Field(default=None, min_length=1, max_length=64)
    severity: Severity | None = None
    conditions: Conditions | None = None
    actions: list[Action] | None = Field(default=None, max_length=MAX_ACTIONS)
    enabled: bool | None = None
    keep_open: bool | None = None


class AlertRuleOut(ApiModel):
    id: str
    name: str
    type: str
    target: str
    target_id: str
    severity: str
    conditions: dict[str, Any]
    actions: list[dict[str, Any]]
    enabled: bool
    keep_open: bool
    created_at: datetime
    updated_at: datetime


class AlertActionOut(ApiModel):
    id: str
    event: str
    type: str = Field(validation_alias="kind")
    target: str = Field(description="The URL or the recipients.")
    status: str
    attempts: int
    next_attempt_at: datetime | None
    last_error: str | None
    finished_at: datetime | None


class AlertOut(ApiModel):
    id: str
    rule_id: str | None
    server_id: str | None
    node_id: str | None
    type: str
    severity: str
    title: str
    message: str
    metadata: dict[str, Any] = Field(validation_alias="details")
    resolved: bool
    resolved_at: datetime | None
    resolved_by: str | None
    created_at: datetime


class AlertDetail(AlertOut):
    actions: list[AlertActionOut] = Field(default_factory=list)


class BulkResolve(ApiInput):
    alert_ids: list[str] = Field(min_length=1, max_length=500)


class AlertFilters(ApiModel):
    """Query filters; not ``extra="forbid"``, since the page parameters share the query."""

    server_id: str | None = Field(default=None, max_length=64)
    node_id: str | None = Field(default=None, max_length=64)
    type: AlertType | None = None
    severity: Severity | None = None
    resolved: bool | None = None


class AlertStats(ApiModel):
    total: int
    unresolved: int
    by_type: dict[str, int]
    by_severity: dict[str, int]
