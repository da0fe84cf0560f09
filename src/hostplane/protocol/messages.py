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
from typing import Annotated, Any, Literal, TypeAlias, get_args

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from pydantic.alias_generators import to_camel

ServerState = Literal[
    "stopped",
    "installing",
    "starting",
    "running",
    "stopping",
    "crashed",
    "suspended",
    # Addition: an install that did not finish; ``message`` says why.
    "install_failed",
]
OutputStream = Literal["stdout", "stderr", "system"]
SubscribableEvent = Literal[
    "server_log", "server_state_update", "resource_stats", "operation_progress"
]


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
    """Addition: ``backupId``, ``sizeBytes``, and ``success``/``error`` so a
    failed backup is reported the same way (``checksum`` is then empty)."""

    type: Literal["backup_complete"] = "backup_complete"
    server_id: str
    backup_name: str
    backup_path: str
    size_mb: float
    checksum: str
    backup_id: str | None = None
    size_bytes: int | None = None
    success: bool = True
    error: str | None = None


class OperationProgress(WireModel):
    """Addition: progress of long work on a server (install, backup, restore,
    transfer, decompress). ``done``/``total`` are bytes unless ``unit`` says
    otherwise; ``total`` is 0 when unknown."""

    type: Literal["operation_progress"] = "operation_progress"
    server_id: str
    operation: str
    done: int
    total: int = 0
    unit: str = "bytes"
    request_id: str | None = None
    message: str | None = None


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


class SftpAuthorize(WireModel):
    """Addition: the agent asks the panel whether ``credential`` (an access token or
    an API key, presented as an SFTP password) may open ``serverId``'s files.

    Answered with ``response`` (``data``: ``{userId, permissions}``, the file
    permissions held on that server) or ``error`` (``UNAUTHENTICATED``,
    ``FORBIDDEN``); ``data`` may also hold ``diskLimitMb``, the server's disk
    allocation, which SFTP writes respect. ``clientIp`` is the SFTP client's address as the node sees
    it, for API keys limited to some addresses. The credential is a secret:
    it is left out of the model's ``repr`` so it never reaches a log line.
    """

    type: Literal["sftp_authorize"] = "sftp_authorize"
    request_id: str
    server_id: str = Field(max_length=64)
    credential: str = Field(max_length=8192, repr=False)
    client_ip: str | None = Field(default=None, max_length=64)


SftpAction: TypeAlias = Literal["upload", "mkdir", "delete", "rename", "chmod"]


class SftpActivity(WireModel):
    """Addition: a change made over SFTP, for the server's log (Catalyst's Flow 8:
    "all file operations logged"). ``path`` is the server-relative path (for a
    rename, ``source -> destination``); ``bytes`` what an upload wrote."""

    type: Literal["sftp_activity"] = "sftp_activity"
    server_id: str = Field(max_length=64)
    user_id: str = Field(max_length=64)
    action: SftpAction
    path: str = Field(max_length=8400)
    bytes: int | None = None


# --------------------------------------------------------------------- panel -> agent


class InstallTemplate(WireModel):
    docker_image: str | None = None
    environment: dict[str, str] = Field(default_factory=dict)
    install_script: str | None = None
    """Addition: the shell script that installs the server into its data folder."""
    install_image: str | None = None
    """Addition: the image the install script runs in (default: ``dockerImage``)."""
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
    port_bindings: dict[str, int] = Field(default_factory=dict)
    """Addition: container port (as a string key) -> host port, every allocation."""
    container_name: str | None = None
    suspended: bool = False

    def script(self) -> str | None:
        return self.install_script or self.template.install_script

    def merged_environment(self) -> dict[str, str]:
        return {**self.template.environment, **self.environment}


class StartTemplate(WireModel):
    start_command: str
    stop_command: str | None = None
    """Addition: written to the server's stdin to stop it gracefully."""
    docker_image: str | None = None
    """Addition: the image the container runtime runs."""


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
    port_bindings: dict[str, int] = Field(default_factory=dict)
    """Addition: container port (as a string key) -> host port, every allocation."""
    container_name: str | None = None
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
    """Addition: ``allocatedDiskMb``, so a restart over the allocation is refused."""

    type: Literal["restart_server"] = "restart_server"
    server_id: str
    server_uuid: str | None = None
    suspended: bool = False
    timeout_seconds: float | None = None
    allocated_disk_mb: int | None = None


class KillServer(_Request):
    """Addition: Catalyst's HTTP API can kill a server; its socket protocol could not."""

    type: Literal["kill_server"] = "kill_server"
    server_id: str
    server_uuid: str | None = None


class DeleteServer(_Request):
    """The panel deleted the (stopped) server: the node removes its container or
    run state, its files, its backups and any staged transfer."""

    type: Literal["delete_server"] = "delete_server"
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
    disk_limit_mb: int | None = None
    """Addition: the server's disk allocation (MB; see ``_ServerRequest``)."""


class CreateBackup(_Request):
    """Addition: ``backupId`` names the archive. The agent keeps backups in its
    own folder and ignores ``backupPath``/``serverDir`` as locations (a panel
    never chooses paths on a node); they are accepted for compatibility."""

    type: Literal["create_backup"] = "create_backup"
    server_id: str
    server_uuid: str | None = None
    backup_name: str
    server_dir: str | None = None
    backup_path: str | None = None
    backup_id: str | None = None


class RestoreBackup(_Request):
    """Addition: ``backupId`` and ``checksum`` (verified before extracting)."""

    type: Literal["restore_backup"] = "restore_backup"
    server_id: str
    server_uuid: str | None = None
    backup_path: str | None = None
    server_dir: str | None = None
    backup_id: str | None = None
    checksum: str | None = None
    disk_limit_mb: int | None = None
    """Addition: the server's disk allocation (MB; see ``_ServerRequest``): a
    backup that expands past it is not restored."""


class DeleteBackup(_Request):
    type: Literal["delete_backup"] = "delete_backup"
    server_id: str
    backup_path: str | None = None
    backup_id: str | None = None


# Additions: files, backup downloads and transfers. Bodies travel as streams
# (see ``StreamCredit``); each request names the stream it reads or writes.


class _ServerRequest(_Request):
    server_id: str
    disk_limit_mb: int | None = None
    """Addition: the server's disk allocation when the request was sent (MB; 0, a
    negative number or none: unlimited). The agent refuses writes past it with
    ``DISK_LIMIT_EXCEEDED``."""


class FileList(_ServerRequest):
    type: Literal["file_list"] = "file_list"
    path: str = "/"


class FileStat(_ServerRequest):
    type: Literal["file_stat"] = "file_stat"
    path: str


class FileRead(_ServerRequest):
    """The agent streams the file on ``streamId`` and answers ``{size}``."""

    type: Literal["file_read"] = "file_read"
    path: str
    stream_id: str
    max_bytes: int | None = None


class FileWrite(_ServerRequest):
    """The panel streams the content on ``streamId``; the agent grants credit,
    writes atomically and answers ``{size, path}``."""

    type: Literal["file_write"] = "file_write"
    path: str
    stream_id: str
    max_bytes: int | None = None


class FileMkdir(_ServerRequest):
    type: Literal["file_mkdir"] = "file_mkdir"
    path: str


class FileDelete(_ServerRequest):
    type: Literal["file_delete"] = "file_delete"
    paths: list[str]


class FileRename(_ServerRequest):
    type: Literal["file_rename"] = "file_rename"
    source: str
    destination: str


class FileCopy(_ServerRequest):
    type: Literal["file_copy"] = "file_copy"
    path: str
    destination: str | None = None


class FileChmod(_ServerRequest):
    type: Literal["file_chmod"] = "file_chmod"
    path: str
    mode: int


class FileCompress(_ServerRequest):
    type: Literal["file_compress"] = "file_compress"
    paths: list[str]
    archive_name: str
    destination: str = "/"


class FileDecompress(_ServerRequest):
    type: Literal["file_decompress"] = "file_decompress"
    archive_path: str
    target_path: str = "/"


class FilePull(_ServerRequest):
    type: Literal["file_pull"] = "file_pull"
    url: str
    directory: str = "/"
    filename: str | None = None


class BackupRead(_ServerRequest):
    """Stream a backup archive (for a one-time download link)."""

    type: Literal["backup_read"] = "backup_read"
    backup_id: str
    stream_id: str


class TransferExport(_ServerRequest):
    """Source node: stream the server's files as an archive on ``streamId``;
    ``stream_end`` carries its size and sha256."""

    type: Literal["transfer_export"] = "transfer_export"
    stream_id: str


class TransferImport(_ServerRequest):
    """Target node: receive the archive on ``streamId`` into a staging area,
    verify the sha256 that ``stream_end`` announces, extract it (still staged).

    With ``direct``, the archive comes straight from the source node over the
    target's peer listener (see :class:`TransferPrepare`) instead of through
    the panel; ``streamId`` is then unused."""

    type: Literal["transfer_import"] = "transfer_import"
    stream_id: str
    direct: bool = False


class TransferPrepare(_ServerRequest):
    """Target node: expect one direct connection for this server presenting
    ``token`` (issued by the panel, single use, short-lived). Answered with
    ``{url}``, the peer listener's address, or ``{url: null}`` when the node
    has no listener (the panel then relays)."""

    type: Literal["transfer_prepare"] = "transfer_prepare"
    token: str = Field(min_length=32, max_length=128)


class TransferPush(_ServerRequest):
    """Source node: stream an archive of the stopped server straight to the
    target's peer listener at ``url``, presenting ``token``. Fails with
    ``TARGET_UNREACHABLE`` when no connection could be opened (nothing was
    sent: the panel falls back to relaying)."""

    type: Literal["transfer_push"] = "transfer_push"
    url: str = Field(max_length=2048)
    token: str = Field(min_length=32, max_length=128)


class TransferCommit(_ServerRequest):
    """Target node: move the staged files into place."""

    type: Literal["transfer_commit"] = "transfer_commit"


class TransferAbort(_ServerRequest):
    """Target node: discard whatever was staged or committed for this server."""

    type: Literal["transfer_abort"] = "transfer_abort"
    remove_files: bool = False


class TransferCleanup(_ServerRequest):
    """Source node, after the panel moved the server: delete its files there."""

    type: Literal["transfer_cleanup"] = "transfer_cleanup"


class StreamCredit(WireModel):
    """Flow control: the receiver of a stream allows ``bytes`` more."""

    type: Literal["stream_credit"] = "stream_credit"
    stream_id: str
    bytes: int


class StreamEnd(WireModel):
    """The sender finished a stream: ``size`` bytes in all, with their sha256."""

    type: Literal["stream_end"] = "stream_end"
    stream_id: str
    size: int
    sha256: str | None = None


class StreamError(WireModel):
    """Either side gives up on a stream (the other stops sending or waiting)."""

    type: Literal["stream_error"] = "stream_error"
    stream_id: str
    code: str = "STREAM_ABORTED"
    message: str = "stream aborted"


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
    return ["server_log", "server_state_update", "resource_stats", "operation_progress"]


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
    | SftpAuthorize
    | SftpActivity
    | InstallServer
    | StartServer
    | StopServer
    | RestartServer
    | KillServer
    | DeleteServer
    | ConsoleInput
    | ExecuteCommand
    | FileOperation
    | CreateBackup
    | RestoreBackup
    | DeleteBackup
    | OperationProgress
    | FileList
    | FileStat
    | FileRead
    | FileWrite
    | FileMkdir
    | FileDelete
    | FileRename
    | FileCopy
    | FileChmod
    | FileCompress
    | FileDecompress
    | FilePull
    | BackupRead
    | TransferExport
    | TransferImport
    | TransferPrepare
    | TransferPush
    | TransferCommit
    | TransferAbort
    | TransferCleanup
    | StreamCredit
    | StreamEnd
    | StreamError
    | Response
    | Error
    | Subscribe
    | Unsubscribe
    | ServerLog
    | LinesDropped,
    Field(discriminator="type"),
]

_adapter: TypeAdapter[Message] = TypeAdapter(Message)

# Every member of the union above, so the two can never disagree.
MESSAGE_TYPES: frozenset[str] = frozenset(
    str(model.model_fields["type"].default) for model in get_args(get_args(Message)[0])
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


# --------------------------------------------------------------------- stream chunks

STREAM_ID_LENGTH = 26
# The close code the panel hangs up an agent's socket with when a newer
# connection for the same node took over: one connection per node.
CLOSE_REPLACED = 4409
_CHUNK_MARK = b"\x01"


def encode_chunk(stream_id: str, payload: bytes) -> bytes:
    """A binary frame carrying part of a stream: a marker byte, the 26-character
    stream id, then the payload (no JSON or base64 on the agent's socket)."""
    raw_id = stream_id.encode("ascii")
    if len(raw_id) != STREAM_ID_LENGTH:
        raise ProtocolError(f"a stream id has {STREAM_ID_LENGTH} characters")
    return _CHUNK_MARK + raw_id + payload


def decode_chunk(frame: bytes) -> tuple[str, bytes]:
    """The stream id and payload of a binary frame; :class:`ProtocolError` if malformed."""
    if len(frame) < 1 + STREAM_ID_LENGTH or frame[:1] != _CHUNK_MARK:
        raise ProtocolError("malformed binary frame")
    try:
        stream_id = frame[1 : 1 + STREAM_ID_LENGTH].decode("ascii")
    except UnicodeDecodeError as exc:
        raise ProtocolError("malformed stream id") from exc
    return stream_id, frame[1 + STREAM_ID_LENGTH :]
