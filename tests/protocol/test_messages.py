"""Every message round-trips through parse_message/dump with camelCase fields."""

from __future__ import annotations

import json
from typing import Any

import pytest

from hostplane.protocol import (
    MESSAGE_TYPES,
    ConsoleOutput,
    Error,
    InstallServer,
    ProtocolError,
    Response,
    StartServer,
    Subscribe,
    decode_chunk,
    dump,
    encode_chunk,
    parse_message,
    request_id_of,
)

UUID = "8fec71a3-9d19-45f7-8362-900674cde45c"

EXAMPLES: dict[str, dict[str, Any]] = {
    "node_handshake": {"type": "node_handshake", "nodeId": "node123", "token": "t"},
    "node_handshake_response": {"type": "node_handshake_response", "nodeId": "node123"},
    "heartbeat": {"type": "heartbeat"},
    "server_state_update": {
        "type": "server_state_update",
        "serverId": "server123",
        "state": "crashed",
        "message": "exited with code 3",
        "previousState": "running",
        "exitCode": 3,
    },
    "console_output": {
        "type": "console_output",
        "serverId": "server123",
        "stream": "stdout",
        "data": "[INFO] one\n[INFO] two\n",
        "seq": 41,
    },
    "backup_complete": {
        "type": "backup_complete",
        "serverId": "server123",
        "backupName": "manual-20260125",
        "backupPath": "/var/lib/x/manual-20260125.tar.gz",
        "sizeMb": 256.0,
        "checksum": "sha256:abc123",
        "backupId": "01JD0000000000000000000001",
        "sizeBytes": 268435456,
        "success": True,
    },
    "health_report": {
        "type": "health_report",
        "nodeId": "node123",
        "cpuPercent": 45.2,
        "memoryUsageMb": 2048.0,
        "memoryTotalMb": 8192.0,
        "diskUsageMb": 512.0,
        "diskTotalMb": 10240.0,
        "containerCount": 4,
        "uptimeSeconds": 3600,
    },
    "resource_stats": {
        "type": "resource_stats",
        "serverId": "server123",
        "cpu": 45.2,
        "memoryMb": 2048.0,
        "networkSent": 1234567,
        "networkReceived": 7654321,
        "diskUsageMb": 512.0,
    },
    "reconcile": {
        "type": "reconcile",
        "servers": [
            {"serverId": "a", "state": "running", "pid": 1234, "lastSeq": 99},
            {"serverId": "b", "state": "crashed", "exitCode": 137},
        ],
    },
    "install_server": {
        "type": "install_server",
        "requestId": "r1",
        "serverId": "server123",
        "serverUuid": UUID,
        "template": {
            "dockerImage": "itzg/minecraft-server:latest",
            "environment": {"EULA": "TRUE", "MEMORY": "4096M"},
            "startCommand": "java -jar server.jar",
            "stopCommand": "stop",
        },
        "installScript": "curl -o server.jar ...",
        "environment": {"MEMORY": "2048M"},
        "allocatedMemoryMb": 4096,
        "allocatedCpuCores": 2.0,
        "allocatedDiskMb": 10240,
        "primaryPort": 25565,
        "networkMode": "bridge",
        "portBindings": {"25565": 25565},
        "suspended": False,
    },
    "start_server": {
        "type": "start_server",
        "requestId": "r2",
        "serverId": "server123",
        "serverUuid": UUID,
        "template": {"startCommand": "java -jar server.jar"},
        "environment": {"EULA": "TRUE"},
        "stopCommand": "stop",
        "allocatedMemoryMb": 4096,
        "allocatedCpuCores": 2.0,
        "allocatedDiskMb": 10240,
        "primaryPort": 25565,
        "networkMode": "bridge",
        "portBindings": {"25565": 25565, "25575": 30001},
        "suspended": False,
    },
    "stop_server": {
        "type": "stop_server",
        "serverId": "server123",
        "serverUuid": UUID,
        "suspended": False,
        "timeoutSeconds": 30.0,
    },
    "restart_server": {
        "type": "restart_server",
        "serverId": "s",
        "serverUuid": UUID,
        "suspended": False,
    },
    "kill_server": {"type": "kill_server", "requestId": "r3", "serverId": "s"},
    "console_input": {"type": "console_input", "serverId": "s", "data": "say Hello World\n"},
    "execute_command": {
        "type": "execute_command",
        "serverId": "s",
        "serverUuid": UUID,
        "command": "say Server restart in 5 minutes",
    },
    "file_operation": {
        "type": "file_operation",
        "operation": "write",
        "serverId": "s",
        "serverUuid": UUID,
        "path": "/server.properties",
        "content": "server-port=25565\n",
    },
    "create_backup": {
        "type": "create_backup",
        "serverId": "s",
        "serverUuid": UUID,
        "backupName": "manual-20260125",
        "serverDir": "/srv/s",
        "backupPath": "/var/lib/b/manual.tar.gz",
    },
    "restore_backup": {
        "type": "restore_backup",
        "serverId": "s",
        "serverUuid": UUID,
        "backupPath": "/var/lib/b/manual.tar.gz",
        "serverDir": "/srv/s",
    },
    "delete_backup": {
        "type": "delete_backup",
        "serverId": "s",
        "backupPath": "/var/lib/b/m.tar.gz",
    },
    "response": {"type": "response", "requestId": "r1", "ok": True, "data": {"pid": 12}},
    "error": {"type": "error", "requestId": "r1", "code": "NOT_RUNNING", "message": "not running"},
    "subscribe": {
        "type": "subscribe",
        "serverId": "s",
        "events": ["server_log", "server_state_update"],
        "lastSeq": 120,
    },
    "unsubscribe": {"type": "unsubscribe", "serverId": "s"},
    "server_log": {
        "type": "server_log",
        "serverId": "s",
        "stream": "stdout",
        "data": "[INFO] Player joined\n",
        "timestamp": "2026-01-25T02:29:17.414000Z",
        "seq": 121,
    },
    "lines_dropped": {"type": "lines_dropped", "serverId": "s", "count": 5000},
    "delete_server": {
        "type": "delete_server",
        "requestId": "r",
        "serverId": "s",
        "serverUuid": UUID,
    },
    "operation_progress": {
        "type": "operation_progress",
        "serverId": "s",
        "operation": "backup",
        "done": 512,
        "total": 1024,
        "unit": "bytes",
        "requestId": "r9",
    },
    "file_list": {"type": "file_list", "requestId": "r", "serverId": "s", "path": "/world"},
    "file_stat": {"type": "file_stat", "requestId": "r", "serverId": "s", "path": "/a"},
    "file_read": {
        "type": "file_read",
        "requestId": "r",
        "serverId": "s",
        "path": "/a",
        "streamId": "01JD0000000000000000000000",
        "maxBytes": 10,
    },
    "file_write": {
        "type": "file_write",
        "requestId": "r",
        "serverId": "s",
        "path": "/a",
        "streamId": "01JD0000000000000000000000",
    },
    "file_mkdir": {"type": "file_mkdir", "requestId": "r", "serverId": "s", "path": "/d"},
    "file_delete": {
        "type": "file_delete",
        "requestId": "r",
        "serverId": "s",
        "paths": ["/a", "/b"],
    },
    "file_rename": {
        "type": "file_rename",
        "requestId": "r",
        "serverId": "s",
        "source": "/a",
        "destination": "/b",
    },
    "file_copy": {"type": "file_copy", "requestId": "r", "serverId": "s", "path": "/a"},
    "file_chmod": {
        "type": "file_chmod",
        "requestId": "r",
        "serverId": "s",
        "path": "/a",
        "mode": 420,
    },
    "file_compress": {
        "type": "file_compress",
        "requestId": "r",
        "serverId": "s",
        "paths": ["/world"],
        "archiveName": "w.tar.gz",
        "destination": "/",
    },
    "file_decompress": {
        "type": "file_decompress",
        "requestId": "r",
        "serverId": "s",
        "archivePath": "/w.tar.gz",
        "targetPath": "/",
    },
    "file_pull": {
        "type": "file_pull",
        "requestId": "r",
        "serverId": "s",
        "url": "https://example.com/a.jar",
        "directory": "/",
    },
    "backup_read": {
        "type": "backup_read",
        "requestId": "r",
        "serverId": "s",
        "backupId": "b1",
        "streamId": "01JD0000000000000000000000",
    },
    "transfer_export": {
        "type": "transfer_export",
        "requestId": "r",
        "serverId": "s",
        "streamId": "01JD0000000000000000000000",
    },
    "transfer_import": {
        "type": "transfer_import",
        "requestId": "r",
        "serverId": "s",
        "streamId": "01JD0000000000000000000000",
        "direct": True,
    },
    "sftp_activity": {
        "type": "sftp_activity",
        "serverId": "server123",
        "userId": "01JD0000000000000000000000",
        "action": "upload",
        "path": "/world/level.dat",
        "bytes": 100000,
    },
    "sftp_authorize": {
        "type": "sftp_authorize",
        "requestId": "r",
        "serverId": "server123",
        "credential": "hp_abcdefgh_secret",
        "clientIp": "198.51.100.7",
    },
    "transfer_prepare": {
        "type": "transfer_prepare",
        "requestId": "r",
        "serverId": "s",
        "token": "t" * 43,
    },
    "transfer_push": {
        "type": "transfer_push",
        "requestId": "r",
        "serverId": "s",
        "url": "ws://node-2.example.com:8081/transfers",
        "token": "t" * 43,
    },
    "transfer_commit": {"type": "transfer_commit", "requestId": "r", "serverId": "s"},
    "transfer_abort": {
        "type": "transfer_abort",
        "requestId": "r",
        "serverId": "s",
        "removeFiles": True,
    },
    "transfer_cleanup": {"type": "transfer_cleanup", "requestId": "r", "serverId": "s"},
    "stream_credit": {
        "type": "stream_credit",
        "streamId": "01JD0000000000000000000000",
        "bytes": 1048576,
    },
    "stream_end": {
        "type": "stream_end",
        "streamId": "01JD0000000000000000000000",
        "size": 3,
        "sha256": "ab",
    },
    "stream_error": {
        "type": "stream_error",
        "streamId": "01JD0000000000000000000000",
        "code": "TOO_LARGE",
        "message": "too large",
    },
}


def test_chunk_frames_round_trip() -> None:
    frame = encode_chunk("01JD0000000000000000000000", b"\x00payload")
    assert decode_chunk(frame) == ("01JD0000000000000000000000", b"\x00payload")
    with pytest.raises(ProtocolError):
        decode_chunk(b"\x02" + frame[1:])
    with pytest.raises(ProtocolError):
        decode_chunk(frame[:10])
    with pytest.raises(ProtocolError):
        encode_chunk("short", b"x")


def test_every_message_type_has_an_example() -> None:
    assert set(EXAMPLES) == MESSAGE_TYPES


@pytest.mark.parametrize("kind", sorted(EXAMPLES))
def test_round_trip(kind: str) -> None:
    wire = EXAMPLES[kind]
    message = parse_message(json.dumps(wire))
    assert message.type == kind
    text = dump(message)
    assert json.loads(text) == wire
    assert parse_message(text) == message
    assert parse_message(text.encode()) == message
    assert parse_message(json.loads(text)) == message


def test_snake_case_in_python_camel_case_on_the_wire() -> None:
    message = Response(request_id="abc", data=[1])
    assert json.loads(dump(message)) == {
        "type": "response",
        "requestId": "abc",
        "ok": True,
        "data": [1],
    }
    assert json.loads(dump(Error(code="X", message="m"))) == {
        "type": "error",
        "code": "X",
        "message": "m",
    }


def test_documented_shapes_parse() -> None:
    start = parse_message(
        {
            "type": "start_server",
            "serverId": "server123",
            "serverUuid": UUID,
            "template": {"startCommand": "java -jar server.jar"},
        }
    )
    assert isinstance(start, StartServer)
    assert request_id_of(start) is None
    assert start.effective_stop_command() is None
    install = parse_message(EXAMPLES["install_server"])
    assert isinstance(install, InstallServer)
    assert install.merged_environment() == {"EULA": "TRUE", "MEMORY": "2048M"}
    assert request_id_of(install) == "r1"
    subscribe = parse_message({"type": "subscribe", "serverId": "s"})
    assert isinstance(subscribe, Subscribe)
    assert subscribe.events == [
        "server_log",
        "server_state_update",
        "resource_stats",
        "operation_progress",
    ]


def test_console_output_batches_lines() -> None:
    batch = parse_message(EXAMPLES["console_output"])
    assert isinstance(batch, ConsoleOutput)
    assert batch.lines() == ["[INFO] one", "[INFO] two"]


def test_unknown_fields_are_ignored() -> None:
    message = parse_message({"type": "heartbeat", "extra": 1})
    assert dump(message) == '{"type":"heartbeat"}'


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ('{"type": "teleport_server", "serverId": "s"}', "UNKNOWN_TYPE"),
        ('{"serverId": "s"}', "UNKNOWN_TYPE"),
        ('{"type": 3}', "UNKNOWN_TYPE"),
        ("not json", "INVALID_MESSAGE"),
        ("[1, 2]", "INVALID_MESSAGE"),
        ('{"type": "console_input", "serverId": "s"}', "INVALID_MESSAGE"),
        ('{"type": "server_state_update", "serverId": "s", "state": "flying"}', "INVALID_MESSAGE"),
        ('{"type": "response", "requestId": "r", "ok": false}', "INVALID_MESSAGE"),
    ],
)
def test_invalid_messages_raise_protocol_error(raw: str, code: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_message(raw)
    assert caught.value.code == code


def test_an_sftp_credential_never_shows_in_the_message_repr() -> None:
    message = parse_message(EXAMPLES["sftp_authorize"])
    secret = EXAMPLES["sftp_authorize"]["credential"]
    assert secret not in repr(message) and secret not in str(message)
    assert json.loads(dump(message))["credential"] == secret
