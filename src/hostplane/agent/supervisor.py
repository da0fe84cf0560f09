"""The per-server supervisor: a small detached process that owns one server.

Why a process of its own: "a restart of the agent does not stop running
servers". If the agent owned the server's pipes, the server would lose its
stdin and its stdout reader with the agent. So the agent starts, for every
server, ``python -m hostplane.agent.supervisor --run-dir RUN --detach``:

- ``--detach`` forks once more and the first process exits as soon as the
  supervisor is ready, so the supervisor is never the agent's child (it is
  re-parented to init, in a session of its own) and a killed agent leaves
  neither zombies nor orphans behind.
- The supervisor reads ``RUN/spec.json`` (argv, cwd, environment, stop
  command, sandbox name; written by the agent, mode 0600), starts the server
  in its own process group (``start_new_session``) and holds its stdin.
- It reads stdout and stderr in 64 KiB chunks (never ``readline()``), splits
  them into lines, gives every line the next per-server sequence number,
  keeps the last :data:`RING_LINES` lines in memory
  (:class:`~hostplane.agent.console_ring.ConsoleRing`) and appends each read's
  lines to a bounded ring log on disk (``console.log``, one JSON array
  ``[firstSeq, stream, [lines]]`` per line, rotated to ``console.log.1`` at
  :data:`LOG_ROTATE_BYTES`). Sequence numbers continue across runs.
- It serves a UNIX socket ``RUN/supervisor.sock``. Newline-delimited JSON,
  one request per line, one reply line (``{"ok": true, ...}`` or
  ``{"ok": false, "error": ...}``) per request:
  ``status``, ``input {data}``, ``stop {timeout, termTimeout}``, ``kill``.
  ``attach {fromSeq}`` turns the connection into an event stream:
  ``{"ev":"output","seq","stream","lines"}``, ``{"ev":"gap","seq","count"}``
  (lines no longer retained), ``{"ev":"state", ...status}``. A re-attaching
  agent asks for the sequence after the last one it saw and misses nothing
  that is still retained.
- Stop: the stop command on stdin, wait ``timeout``; SIGTERM to the process
  group, wait ``termTimeout``; SIGKILL to the group. Kill: SIGKILL to the
  group. When the server's main process exits, whatever is left of its group
  is killed too.
- On exit it writes the final state (``stopped``, or ``crashed`` for an
  exit with a non-zero code that nobody asked for) with the exit code into
  ``RUN/state.json``, streams it to attached agents, waits (briefly) for them
  to hang up, records whether anyone was told (``reported``), removes the
  socket and exits. An agent that was away reads ``state.json`` on reattach.

The state file is rewritten atomically on every state change, so ``status``
works from the file alone when no supervisor is running.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hostplane.agent.console_ring import ConsoleRing
from hostplane.agent.sysinfo import group_members
from hostplane.core.heap import settle_heap

RING_LINES = 20_000
LOG_ROTATE_BYTES = 4 * 1024 * 1024
READ_CHUNK = 65_536
MAX_LINE = 65_536
MAX_BATCH_LINES = 2_000
MAX_BATCH_CHARS = 256 * 1024
FINAL_REPORT_GRACE = 5.0

SOCKET_NAME = "supervisor.sock"
STATE_NAME = "state.json"
SPEC_NAME = "spec.json"
LOG_NAME = "console.log"


@contextlib.contextmanager
def socket_address(run_dir: Path) -> Iterator[str]:
    """The address to bind or connect for ``run_dir``'s socket, valid inside the block.

    UNIX socket paths are limited to 107 bytes; a longer path is reached
    through ``/proc/self/fd`` of a directory descriptor held open meanwhile.
    """
    path = str(run_dir / SOCKET_NAME)
    if len(path.encode()) < 100:
        yield path
        return
    fd = os.open(run_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{fd}/{SOCKET_NAME}"
    finally:
        os.close(fd)


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_json_atomic(path: Path, data: dict[str, Any], *, mode: int = 0o600) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh)
    os.replace(tmp, path)


class Supervisor:
    def __init__(self, run_dir: Path, spec: dict[str, Any]) -> None:
        self.socket_inode = -1
        self.run_dir = run_dir
        self.spec = spec
        self.argv: list[str] = list(spec["argv"])
        self.stop_command: str | None = spec.get("stopCommand")
        previous = read_json(run_dir / STATE_NAME) or {}
        self.ring = ConsoleRing(RING_LINES, int(previous.get("lastSeq") or 0) + 1)
        self.run_first_seq = self.ring.next_seq
        self.state = "starting"
        self.state_version = 0
        self.pid: int | None = None
        self.exit_code: int | None = None
        self.message: str | None = None
        self.started_at = time.time()
        self.finished = False
        self.reported = False
        self.stop_requested = False
        self.listeners: set[asyncio.Event] = set()
        self.proc: asyncio.subprocess.Process | None = None
        self.stop_task: asyncio.Task[None] | None = None
        self.log = open(run_dir / LOG_NAME, "a", encoding="utf-8")  # noqa: SIM115
        self.exited = asyncio.Event()
        self.ever_attached = False

    # ------------------------------------------------------------------ state

    def status(self) -> dict[str, Any]:
        return {
            "serverId": self.spec.get("serverId"),
            "state": self.state,
            "pid": self.pid,
            "exitCode": self.exit_code,
            "message": self.message,
            "sandbox": self.spec.get("sandbox", "none"),
            "lastSeq": self.ring.next_seq - 1,
            "firstSeq": self.ring.oldest,
            "runFirstSeq": self.run_first_seq,
            "supervisorPid": os.getpid(),
            "startedAt": self.started_at,
            "reported": self.reported,
        }

    def set_state(self, state: str, *, message: str | None = None) -> None:
        self.state = state
        self.message = message
        self.state_version += 1
        write_json_atomic(self.run_dir / STATE_NAME, self.status())
        self.wake()

    def wake(self) -> None:
        for event in self.listeners:
            event.set()

    # ------------------------------------------------------------------ output

    def append(self, stream: str, lines: list[str]) -> None:
        # One record per read, not per line: the JSON encoder runs once.
        seq = self.ring.append(stream, lines)
        self.log.write(json.dumps([seq, stream, lines]) + "\n")
        self.log.flush()
        if self.log.tell() > LOG_ROTATE_BYTES:
            self.log.close()
            os.replace(self.run_dir / LOG_NAME, self.run_dir / f"{LOG_NAME}.1")
            self.log = open(self.run_dir / LOG_NAME, "a", encoding="utf-8")  # noqa: SIM115
        self.wake()

    async def pump(self, pipe: asyncio.StreamReader, stream: str) -> None:
        partial = b""
        while True:
            chunk = await pipe.read(READ_CHUNK)
            if not chunk:
                break
            data = partial + chunk
            end = data.rfind(b"\n")
            if end < 0 and len(data) <= MAX_LINE:
                partial = data
                continue
            if end < 0 or len(data) - end - 1 > MAX_LINE:
                # An overlong unfinished line is cut here and counts as a line.
                complete, partial = data, b""
            else:
                complete, partial = data[:end], data[end + 1 :]
            self.append(stream, _lines(complete))
        if partial:
            self.append(stream, _lines(partial))

    # ------------------------------------------------------------------ control

    def signal_group(self, sig: signal.Signals) -> None:
        if self.pid is None:
            return
        if sig != signal.SIGKILL and self.spec.get("sandbox") == "bubblewrap":
            # bwrap dies of SIGTERM at once and --die-with-parent then SIGKILLs
            # the sandbox: give the signal to the server's processes only.
            for pid, name in group_members(self.pid):
                if name != "bwrap":
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(pid, sig)
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)

    async def wait_exit(self, seconds: float) -> bool:
        try:
            await asyncio.wait_for(self.exited.wait(), seconds)
        except TimeoutError:
            return False
        return True

    async def stop(self, stop_timeout: float, term_timeout: float) -> None:
        self.stop_requested = True
        if self.finished:
            return
        self.set_state("stopping")
        proc = self.proc
        if self.stop_command and proc is not None and proc.stdin is not None:
            try:
                proc.stdin.write(self.stop_command.encode() + b"\n")
                await proc.stdin.drain()
            except (BrokenPipeError, ConnectionResetError):
                pass
            if await self.wait_exit(stop_timeout):
                return
        # Re-send SIGTERM every second of the grace period: inside a sandbox it
        # goes to the server's processes by name, and one that was still
        # starting (or forked since) when the group was scanned must get it too.
        deadline = time.monotonic() + term_timeout
        while True:
            self.signal_group(signal.SIGTERM)
            remaining = deadline - time.monotonic()
            if await self.wait_exit(min(1.0, max(remaining, 0.0))):
                return
            if time.monotonic() >= deadline:
                break
        self.signal_group(signal.SIGKILL)

    def request_stop(self) -> None:
        if self.stop_task is None and not self.finished:
            self.stop_task = asyncio.create_task(
                self.stop(
                    float(self.spec.get("stopTimeout", 30)), float(self.spec.get("termTimeout", 10))
                )
            )

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                line = await reader.readline()
                if not line:
                    return
                try:
                    request = json.loads(line)
                    op = request["op"]
                except (ValueError, KeyError, TypeError):
                    await self.reply(writer, {"ok": False, "error": "bad request"})
                    continue
                if op == "attach":
                    await self.reply(writer, {"ok": True, **self.status()})
                    await self.stream_to(writer, request.get("fromSeq"))
                    return
                await self.reply(writer, await self.execute(op, request))
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def execute(self, op: str, request: dict[str, Any]) -> dict[str, Any]:
        if op == "status":
            return {"ok": True, **self.status()}
        if op == "input":
            proc = self.proc
            if self.finished or proc is None or proc.stdin is None:
                return {"ok": False, "error": "not running"}
            try:
                proc.stdin.write(str(request.get("data", "")).encode())
                await proc.stdin.drain()
            except (BrokenPipeError, ConnectionResetError):
                return {"ok": False, "error": "stdin closed"}
            return {"ok": True}
        if op == "stop":
            if self.stop_task is None and not self.finished:
                self.stop_task = asyncio.create_task(
                    self.stop(
                        float(request.get("timeout", 30)), float(request.get("termTimeout", 10))
                    )
                )
            return {"ok": True, **self.status()}
        if op == "kill":
            self.stop_requested = True
            self.signal_group(signal.SIGKILL)
            return {"ok": True, **self.status()}
        return {"ok": False, "error": f"unknown op {op!r}"}

    async def reply(self, writer: asyncio.StreamWriter, data: dict[str, Any]) -> None:
        writer.write(json.dumps(data).encode() + b"\n")
        await writer.drain()

    async def stream_to(self, writer: asyncio.StreamWriter, from_seq: Any) -> None:
        wake = asyncio.Event()
        self.listeners.add(wake)
        self.ever_attached = True
        ring = self.ring
        cursor = int(from_seq) if isinstance(from_seq, int) else ring.oldest
        cursor = min(cursor, ring.next_seq)
        seen_version = -1
        try:
            while True:
                wake.clear()
                oldest = ring.oldest
                if cursor < oldest:
                    await self.reply(writer, {"ev": "gap", "seq": cursor, "count": oldest - cursor})
                    cursor = oldest
                    continue
                if cursor < ring.next_seq:
                    runs = ring.batch(cursor, MAX_BATCH_LINES, MAX_BATCH_CHARS)
                    writer.write(
                        b"".join(
                            json.dumps(
                                {
                                    "ev": "output",
                                    "seq": run.seq,
                                    "stream": run.stream,
                                    "lines": run.lines,
                                }
                            ).encode()
                            + b"\n"
                            for run in runs
                        )
                    )
                    await writer.drain()
                    cursor = runs[-1].end
                    continue
                if seen_version != self.state_version:
                    seen_version = self.state_version
                    final = self.finished
                    await self.reply(writer, {"ev": "state", **self.status()})
                    if final:
                        self.reported = True
                    continue
                if self.finished:
                    return
                await wake.wait()
        finally:
            self.listeners.discard(wake)
            if not self.listeners:
                self.wake()

    # ------------------------------------------------------------------ main

    async def run(self, ready_fd: int | None) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.run_dir / SOCKET_NAME)
        with socket_address(self.run_dir) as address:
            server = await asyncio.start_unix_server(self.handle, path=address)
        os.chmod(self.run_dir / SOCKET_NAME, 0o600)
        # After a restart a new supervisor binds the same path: on exit, only
        # remove the socket if it is still ours.
        self.socket_inode = os.stat(self.run_dir / SOCKET_NAME).st_ino
        # Asked to go away (node shutdown): stop the server gracefully first.
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.add_signal_handler(sig, self.request_stop)
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                cwd=self.spec.get("cwd"),
                env=self.spec.get("env") or {},
                start_new_session=True,
            )
        except OSError as exc:
            self.finished = True
            self.exited.set()
            self.set_state("crashed", message=f"could not start: {exc}")
            signal_ready(ready_fd, f"error: could not start: {exc}")
            await self.finish(server)
            return
        self.pid = self.proc.pid
        self.set_state("running")
        signal_ready(ready_fd, "ok")
        stdout, stderr = self.proc.stdout, self.proc.stderr
        if stdout is None or stderr is None:  # pragma: no cover - asked for pipes
            raise OSError("no output pipes")
        pumps = asyncio.gather(self.pump(stdout, "stdout"), self.pump(stderr, "stderr"))
        returncode = await self.proc.wait()
        # Killed by a signal: report it the way shells and container engines do.
        code = 128 - returncode if returncode < 0 else returncode
        # Leftovers of the group would keep the pipes open (and run unsupervised).
        self.signal_group(signal.SIGKILL)
        try:
            await asyncio.wait_for(pumps, 2.0)
        except TimeoutError:
            pumps.cancel()
        self.exit_code = code
        self.finished = True
        self.exited.set()
        if self.stop_task is not None and not self.stop_task.done():
            self.stop_task.cancel()
        if self.stop_requested or code == 0:
            self.set_state("stopped", message=None if self.stop_requested else "exited")
        else:
            self.set_state("crashed", message=f"exited with code {code}")
        await self.finish(server)

    async def finish(self, server: asyncio.Server) -> None:
        deadline = time.monotonic() + FINAL_REPORT_GRACE
        # An agent that started us attaches right after: a server that exits at
        # once must still have its output and exit delivered to it.
        while (  # noqa: ASYNC110 - polls a few times, briefly
            self.listeners or (self.spec.get("awaitAttach") and not self.ever_attached)
        ) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        server.close()
        with contextlib.suppress(FileNotFoundError):
            if os.stat(self.run_dir / SOCKET_NAME).st_ino == self.socket_inode:
                os.unlink(self.run_dir / SOCKET_NAME)
        write_json_atomic(self.run_dir / STATE_NAME, self.status())
        self.log.close()


def _lines(data: bytes) -> list[str]:
    """``data`` (whole lines, without the last newline) as text lines, without
    their carriage returns; decoded at once, not line by line (a newline is
    never part of a multi-byte character, so the result is the same)."""
    lines = data.decode("utf-8", "replace").split("\n")
    if b"\r" in data:
        return [line.rstrip("\r") for line in lines]
    return lines


def signal_ready(fd: int | None, text: str) -> None:
    if fd is None:
        return
    with contextlib.suppress(OSError):
        os.write(fd, text.encode() + b"\n")
        os.close(fd)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hostplane-supervisor")
    parser.add_argument("--run-dir", required=True, type=Path)
    parser.add_argument("--detach", action="store_true")
    args = parser.parse_args(argv)
    run_dir: Path = args.run_dir.resolve()
    spec = read_json(run_dir / SPEC_NAME)
    if spec is None:
        sys.stderr.write(f"no spec in {run_dir}\n")
        return 2
    ready_fd: int | None = None
    if args.detach:
        read_end, write_end = os.pipe()
        if os.fork() > 0:
            os.close(write_end)
            answer = b""
            while chunk := os.read(read_end, 4096):
                answer += chunk
            text = answer.decode().strip()
            if text != "ok":
                sys.stderr.write(f"{text or 'supervisor failed to start'}\n")
                return 1
            return 0
        os.close(read_end)
        ready_fd = write_end
        # Whoever started us waits for our stdout/stderr to close: use a log file.
        log_fd = os.open(run_dir / "supervisor.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        os.close(log_fd)
    (run_dir / "supervisor.pid").write_text(str(os.getpid()))
    # The spec holds the server's environment (secrets); it is not needed once read.
    with contextlib.suppress(FileNotFoundError):
        os.unlink(run_dir / SPEC_NAME)
    settle_heap()
    asyncio.run(Supervisor(run_dir, spec).run(ready_fd))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
