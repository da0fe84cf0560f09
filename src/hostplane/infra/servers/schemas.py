from __future__ import annotations

from datetime import datetime
from typing import Any, Final, Literal

from pydantic import Field, model_validator

from hostplane.core.schemas import ApiInput, ApiModel

RestartPolicy = Literal["always", "on-failure", "never"]


class ServerOut(ApiModel):
    id: str
    uuid: str
    name: str
    description: str | None
    owner_id: str | None
    node_id: str
    template_id: str
    status: str
    # Why the status last changed on its own (a refusal, a failed install, a
    # state ended by the sweeper); null after a change someone asked for.
    status_reason: str | None = None
    allocated_memory_mb: int
    allocated_cpu_cores: float
    allocated_disk_mb: int
    primary_port: int | None
    network_mode: str
    container_name: str
    cpu_usage: float | None
    memory_usage_mb: int | None
    created_at: datetime
    updated_at: datetime
    # SkyPANEL's list fields: the address players connect to (the node's public
    # address), and the name of the plan the server was bought on (null without one).
    ip_address: str | None = None
    plan: str | None = None
    plan_id: str | None = None
    expires_at: datetime | None = Field(
        default=None, description="When the plan's current term ends; null without a plan."
    )
    database_limit: int = 0


class NodeRef(ApiModel):
    id: str
    name: str
    hostname: str
    public_address: str


class TemplateRef(ApiModel):
    id: str
    name: str
    docker_image: str


class ServerVariableOut(ApiModel):
    """Pterodactyl's startup variable: its value on this server and whether the caller
    may change it."""

    name: str
    description: str | None
    env_variable: str
    default_value: str
    server_value: str
    is_editable: bool
    rules: str


class ServerDetail(ServerOut):
    node: NodeRef
    template: TemplateRef
    environment: dict[str, Any] | None = Field(
        description="The server's variables; null without ``server.details``."
    )
    startup_command: str | None = Field(
        description="The template's start command with its ``{{VAR}}`` placeholders; "
        "null without ``server.details``."
    )
    variables: list[ServerVariableOut] | None = Field(
        description="Each variable the caller may see; null without ``server.details``."
    )
    container_id: str | None
    network_sent: int | None
    network_received: int | None
    crash_count: int
    last_crash_at: datetime | None
    last_exit_code: int | None
    restart_policy: str
    max_crash_count: int
    suspended_at: datetime | None
    suspended_by_user_id: str | None
    suspension_reason: str | None


class ServerCreate(ApiInput):
    name: str = Field(min_length=1, max_length=100)
    description: str | None = Field(default=None, max_length=2000)
    template_id: str
    node_id: str
    location_id: str | None = Field(
        default=None, description="Accepted for Catalyst; the node decides."
    )
    owner_id: str | None = Field(default=None, description="Defaults to the caller.")
    # Left out: the runtime configuration's ``defaultLimits``.
    allocated_memory_mb: int | None = Field(default=None, gt=0)
    allocated_cpu_cores: float | None = Field(default=None, gt=0)
    allocated_disk_mb: int | None = Field(default=None, gt=0)
    primary_port: int | None = Field(default=None, ge=1, le=65535)
    port_bindings: dict[int, int] | None = Field(
        default=None, description='Container port to host port, e.g. {"25565": 25565}.'
    )
    network_mode: Literal["bridge", "host"] = "bridge"
    environment: dict[str, str] = Field(default_factory=dict)
    restart_policy: RestartPolicy = "on-failure"
    max_crash_count: int = Field(default=5, ge=0, le=1000)
    database_limit: int = Field(default=0, ge=0, le=1000, description="0: no databases.")

    @model_validator(mode="after")
    def _ports_in_range(self) -> ServerCreate:
        for container, host in (self.port_bindings or {}).items():
            if not (1 <= container <= 65535 and 1 <= host <= 65535):
                raise ValueError("ports must be between 1 and 65535")
        return self


class ServerUpdate(ApiInput):
    name: str | None = Field(default=None, min_length=1, max_length=100)
    description: str | None = Field(default=None, max_length=2000)
    owner_id: str | None = None
    allocated_memory_mb: int | None = Field(default=None, gt=0)
    allocated_cpu_cores: float | None = Field(default=None, gt=0)
    allocated_disk_mb: int | None = Field(default=None, gt=0)
    environment: dict[str, str] | None = None
    database_limit: int | None = Field(default=None, ge=0, le=1000, description="Operators only.")


class SuspendBody(ApiInput):
    reason: str | None = Field(default=None, max_length=500)


class StopBody(ApiInput):
    timeout: int | None = Field(default=None, ge=1, le=3600, description="Seconds before a kill.")


class PowerBody(ApiInput):
    """QeinTech's ``{signal}`` or SkyPANEL's ``{action}`` (``shutdown`` is ``stop``)."""

    signal: Literal["start", "stop", "restart", "kill"] | None = None
    action: Literal["start", "stop", "restart", "shutdown", "kill"] | None = None
    timeout: int | None = Field(default=None, ge=1, le=3600)

    @model_validator(mode="after")
    def _one_of(self) -> PowerBody:
        if (self.signal is None) == (self.action is None):
            raise ValueError("give exactly one of signal or action")
        return self

    @property
    def power_action(self) -> Literal["start", "stop", "restart", "kill"]:
        if self.signal is not None:
            return self.signal
        if self.action == "start":
            return "start"
        if self.action == "restart":
            return "restart"
        if self.action == "kill":
            return "kill"
        return "stop"  # "stop" and SkyPANEL's "shutdown"


# The longest console command, by REST (/command) and over /ws (console_input).
MAX_COMMAND_LENGTH: Final = 4096


class CommandBody(ApiInput):
    command: str = Field(min_length=1, max_length=MAX_COMMAND_LENGTH)


class RestartPolicyBody(ApiInput):
    restart_policy: RestartPolicy | None = None
    max_crash_count: int | None = Field(default=None, ge=0, le=1000)


class RestartPolicyOut(ApiModel):
    restart_policy: str
    max_crash_count: int


class ActionResult(ApiModel):
    message: str
    server_id: str
    status: str


class SuspensionOut(ApiModel):
    id: str
    status: str
    suspended_at: datetime | None
    suspended_by_user_id: str | None
    suspension_reason: str | None


class ResourcesOut(ApiModel):
    server_id: str
    status: str
    cpu_usage: float | None
    memory_usage_mb: int | None
    memory_limit_mb: int
    disk_usage_mb: int | None
    disk_limit_mb: int
    network_sent: int | None
    network_received: int | None
    updated_at: datetime | None


class AllocationOut(ApiModel):
    container_port: int
    host_port: int
    is_primary: bool


class NetworkAllocationOut(AllocationOut):
    ip: str
    port: int


class AllocationCreate(ApiInput):
    container_port: int = Field(ge=1, le=65535)
    host_port: int | None = Field(default=None, ge=1, le=65535)


class PrimaryBody(ApiInput):
    container_port: int = Field(ge=1, le=65535)


class PrimaryOut(ApiModel):
    primary_port: int | None


class SubuserOut(ApiModel):
    user_id: str
    permissions: list[str]
    granted_by: str | None
    created_at: datetime


class SubuserCreate(ApiInput):
    user_id: str
    permissions: list[str] = Field(min_length=1)


class SubuserUpdate(ApiInput):
    permissions: list[str] = Field(min_length=1)


class LogLine(ApiModel):
    id: int = Field(description="The line's sequence number; pass it as ``before`` to page back.")
    server_id: str
    stream: str
    data: str
    timestamp: datetime
