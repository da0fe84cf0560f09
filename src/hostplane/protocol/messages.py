"""Every message that crosses the panel's ``/ws`` socket.

Field names are camelCase on the wire (``serverId``, ``memoryMb``) and
snake_case in Python; models accept either when parsing and always write
camelCase. Unknown fields are ignored (a newer peer may add some); an unknown
``type`` or a missing/invalid field is a :class:`ProtocolError`.

Messages that appear in more than one direction with slightly different
shapes in the Catalyst document (``server_state_update``, ``resource_stats``,
``console_input``) are one model here whose direction-specific fields are
optional.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from pydantic.alias_generators import to_camel

ServerState = Literal[
    "stopped", "installing", "starting", "running", "stopping", "crashed", "suspended"
]
OutputStream = Literal["stdout", "stderr", "system"]
SubscribableEvent = Literal["server_log", "server_state_update", "resource_stats"]


class ProtocolError(ValueError):
    """A frame that is not valid JSON, has an unknown ``type`` or invalid fields."""

    def __init__(self, message: str, *, code: str = "INVALID_MESSAGE") -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class WireModel(BaseModel):
    """camelCase on the wire, snake_case in Python, unknown fields ignored."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True
    )


class _Request(WireModel):
    """A message that may carry a ``requestId``; the receiver answers with
    :class:`Response` or :class:`Error` carrying the same id."""

    request_id: str | None = None


# --------------------------------------------------------------------- agent -> panel


class NodeHandshake(WireModel):
    type: Literal["node_handshake"] = "node_handshake"
    node_id: str
    token: str
    version: str | None = None
    """Addition: the agent's version, for the panel's node list."""


class NodeHandshakeResponse(WireModel):
    type: Literal["node_handshake_response"] = "node_handshake_response"
    node_id: str


class Heartbeat(WireModel):
    type: Literal["heartbeat"] = "heartbeat"


class ServerStateUpdate(WireModel):
    """Agent -> panel (with ``message``) and panel -> client (with ``previousState``).

    Addition: ``exitCode`` when the process has exited (stopped or crashed).
    """

    type: Literal["server_state_update"] = "server_state_update"
    server_id: str
    state: ServerState
    message: str | None = None
    previous_state: ServerState | None = None
    exit_code: int | None = None


class ConsoleOutput(WireModel):
    """Console output from the agent.

    Addition: ``data`` may hold several lines, newline-joined and ending with a
    newline (one frame per line caps fan-out near 10k lines/s). ``seq`` is
    the per-server sequence number of the first line in ``data``; the lines
    that follow have ``seq + 1``, ``seq + 2``, ... Install output has no seq.
    """

    type: Literal["console_output"] = "console_output"
    server_id: str
    stream: OutputStream = "stdout"
    data: str
    seq: int | None = None

    def lines(self) -> list[str]:
        """The lines in ``data`` without their newlines."""
        text = self.data[:-1] if self.data.endswith("\n") else self.data
        return text.split("\n")


class BackupComplete(WireModel):
    type: Literal["backup_complete"] = "backup_complete"
    server_id: str
    backup_name: str
    backup_path: str
    size_mb: float
    checksum: str


class HealthReport(WireModel):
    type: Literal["health_report"] = "health_report"
    node_id: str
    cpu_percent: float
    memory_usage_mb: float
    memory_total_mb: float
    disk_usage_mb: float
    disk_total_mb: float
    container_count: int
    uptime_seconds: int


class ResourceStats(WireModel):
    """Agent -> panel and panel -> client (the latter without ``diskUsageMb``)."""

    type: Literal["resource_stats"] = "resource_stats"
    server_id: str
    cpu: float
    memory_mb: float
    network_sent: int = 0
    network_received: int = 0
    disk_usage_mb: float | None = None


class ReconciledServer(WireModel):
    server_id: str
    state: ServerState
    pid: int | None = None
    exit_code: int | None = None
    last_seq: int | None = None
    """The supervisor's latest console sequence number."""


class Reconcile(WireModel):
    """Addition: sent by the agent after every (re)connect, listing every
    server's real state so the panel can correct its view and resend what it
    wants."""

    type: Literal["reconcile"] = "reconcile"
    servers: list[ReconciledServer] = Field(default_factory=list)


# --------------------------------------------------------------------- panel -> agent


class InstallTemplate(WireModel):
    docker_image: str | None = None
    environment: dict[str, str] = Field(default_factory=dict)
    install_script: str | None = None
    """Addition: the shell script that installs the server into its data folder."""
    start_command: str | None = None
    stop_command: str | None = None


class InstallServer(_Request):
    """Addition: ``installScript`` and ``environment`` at the top level
    (overriding the template's)."""

    type: Literal["install_server"] = "install_server"
    server_id: str
    server_uuid: str
    template: InstallTemplate = Field(default_factory=InstallTemplate)
    install_script: str | None = None
    environment: dict[str, str] = Field(default_factory=dict)
    allocated_memory_mb: int | None = None
    allocated_cpu_cores: float | None = None
    allocated_disk_mb: int | None = None
    primary_port: int | None = None
    network_mode: str | None = None
    suspended: bool = False

    def script(self) -> str | None:
        return self.install_script or self.template.install_script

    def merged_environment(self) -> dict[str, str]:
        return {**self.template.environment, **self.environment}


class StartTemplate(WireModel):
    start_command: str
    stop_command: str | None = None
    """Addition: written to the server's stdin to stop it gracefully."""


class StartServer(_Request):
    """Addition: ``stopCommand`` (also accepted in the template) and
    ``stopTimeoutSeconds``."""

    type: Literal["start_server"] = "start_server"
    server_id: str
    server_uuid: str
    template: StartTemplate
    environment: dict[str, str] = Field(default_factory=dict)
    stop_command: str | None = None
    stop_timeout_seconds: float | None = None
    allocated_memory_mb: int | None = None
    allocated_cpu_cores: float | None = None
    allocated_disk_mb: int | None = None
    primary_port: int | None = None
    network_mode: str | None = None
    suspended: bool = False

    def effective_stop_command(self) -> str | None:
        return self.stop_command or self.template.stop_command


class StopServer(_Request):
    """Addition: ``timeoutSeconds`` before SIGTERM (and again before SIGKILL)."""

    type: Literal["stop_server"] = "stop_server"
    server_id: str
    server_uuid: str | None = None
    suspended: bool = False
    timeout_seconds: float | None = None


class RestartServer(_Request):
    type: Literal["restart_server"] = "restart_server"
    server_id: str
    server_uuid: str | None = None
    suspended: bool = False
    timeout_seconds: float | None = None


class KillServer(_Request):
    """Addition: Catalyst's HTTP API can kill a server; its socket protocol could not."""

    type: Literal["kill_server"] = "kill_server"
    server_id: str
    server_uuid: str | None = None


class ConsoleInput(_Request):
    """Panel -> agent and client -> panel."""

    type: Literal["console_input"] = "console_input"
    server_id: str
    data: str


class ExecuteCommand(_Request):
    type: Literal["execute_command"] = "execute_command"
    server_id: str
    server_uuid: str | None = None
    command: str


class FileOperation(_Request):
    type: Literal["file_operation"] = "file_operation"
    operation: Literal["read", "write", "delete", "list"]
    server_id: str
    server_uuid: str | None = None
    path: str
    content: str | None = None


class CreateBackup(_Request):
    type: Literal["create_backup"] = "create_backup"
    server_id: str
    server_uuid: str | None = None
    backup_name: str
    server_dir: str | None = None
    backup_path: str


class RestoreBackup(_Request):
    type: Literal["restore_backup"] = "restore_backup"
    server_id: str
    server_uuid: str | None = None
    backup_path: str
    server_dir: str | None = None


class DeleteBackup(_Request):
    type: Literal["delete_backup"] = "delete_backup"
    server_id: str
    backup_path: str


# --------------------------------------------------------------------- replies


class Response(WireModel):
    """Addition: the successful answer to a message that carried ``requestId``."""

    type: Literal["response"] = "response"
    request_id: str
    ok: Literal[True] = True
    data: Any = None


class Error(WireModel):
    """Addition: the failed answer to a message (``requestId`` when it had one)."""

    type: Literal["error"] = "error"
    request_id: str | None = None
    code: str
    message: str


# --------------------------------------------------------------------- client <-> panel


def _all_events() -> list[SubscribableEvent]:
    return ["server_log", "server_state_update", "resource_stats"]


class Subscribe(WireModel):
    """Addition: ``lastSeq`` replays retained console lines after that sequence."""

    type: Literal["subscribe"] = "subscribe"
    server_id: str
    events: list[SubscribableEvent] = Field(default_factory=_all_events)
    last_seq: int | None = None


class Unsubscribe(WireModel):
    type: Literal["unsubscribe"] = "unsubscribe"
    server_id: str


class ServerLog(WireModel):
    """Addition: ``seq``, the per-server sequence number of the (first) line;
    ``data`` may hold several newline-joined lines as in :class:`ConsoleOutput`."""

    type: Literal["server_log"] = "server_log"
    server_id: str
    stream: OutputStream = "stdout"
    data: str
    timestamp: datetime
    seq: int | None = None


class LinesDropped(WireModel):
    """Addition: ``count`` console lines were not delivered to this slow client
    (or were no longer retained by the agent)."""

    type: Literal["lines_dropped"] = "lines_dropped"
    server_id: str
    count: int


Message: TypeAlias = Annotated[
    NodeHandshake
    | NodeHandshakeResponse
    | Heartbeat
    | ServerStateUpdate
    | ConsoleOutput
    | BackupComplete
    | HealthReport
    | ResourceStats
    | Reconcile
    | InstallServer
    | StartServer
    | StopServer
    | RestartServer
    | KillServer
    | ConsoleInput
    | ExecuteCommand
    | FileOperation
    | CreateBackup
    | RestoreBackup
    | DeleteBackup
    | Response
    | Error
    | Subscribe
    | Unsubscribe
    | ServerLog
    | LinesDropped,
    Field(discriminator="type"),
]

_adapter: TypeAdapter[Message] = TypeAdapter(Message)

MESSAGE_TYPES: frozenset[str] = frozenset(
    str(model.model_fields["type"].default)
    for model in (
        NodeHandshake,
        NodeHandshakeResponse,
        Heartbeat,
        ServerStateUpdate,
        ConsoleOutput,
        BackupComplete,
        HealthReport,
        ResourceStats,
        Reconcile,
        InstallServer,
        StartServer,
        StopServer,
        RestartServer,
        KillServer,
        ConsoleInput,
        ExecuteCommand,
        FileOperation,
        CreateBackup,
        RestoreBackup,
        DeleteBackup,
        Response,
        Error,
        Subscribe,
        Unsubscribe,
        ServerLog,
        LinesDropped,
    )
)


def parse_message(raw: str | bytes | dict[str, Any]) -> Message:
    """Parse one frame (JSON text, bytes or an already decoded object).

    Raises :class:`ProtocolError` for invalid JSON, a non-object, a missing or
    unknown ``type`` (code ``UNKNOWN_TYPE``) or invalid fields.
    """
    if isinstance(raw, str | bytes):
        try:
            obj = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ProtocolError(f"not JSON: {exc}") from exc
    else:
        obj = raw
    if not isinstance(obj, dict):
        raise ProtocolError("a message is a JSON object")
    kind = obj.get("type")
    if not isinstance(kind, str) or kind not in MESSAGE_TYPES:
        raise ProtocolError(f"unknown message type: {kind!r}", code="UNKNOWN_TYPE")
    try:
        return _adapter.validate_python(obj)
    except ValidationError as exc:
        raise ProtocolError(f"invalid {kind} message: {exc.errors(include_url=False)}") from exc


def dump(message: WireModel) -> str:
    """The JSON text of ``message``, camelCase, without ``null`` optional fields."""
    return message.model_dump_json(by_alias=True, exclude_none=True)


def request_id_of(message: WireModel) -> str | None:
    """The ``requestId`` of a message, if it has one."""
    value = getattr(message, "request_id", None)
    return value if isinstance(value, str) else None
