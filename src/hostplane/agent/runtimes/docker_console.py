"""The console of a container: a FIFO for stdin, the engine's log for output.

Why a FIFO and not an attached stdin: with ``tty=False`` Podman closes the
container's stdin as soon as *any* client attached to it disconnects, or
when the Podman service restarts, and the server reads EOF (many servers
then shut down or spin). ``tty=True`` avoids that but merges stderr into
stdout, echoes input unless ``stty -echo`` ran first, rewrites ``\\n`` to
``\\r\\n`` and lets the line discipline interpret control characters in
user input (a ``^C`` in a console line would signal the server).

So the runtime creates a named pipe on the host, ``run/<id>/io/console``,
bind-mounts ``run/<id>/io`` at :data:`CONSOLE_DIR`, and the container's
command opens it read-write as stdin before running the start command
(``exec 0<>/run/hostplane/console``). Opening read-write means the
container itself always holds a writer, so the server never reads EOF,
whoever comes and goes on the host side. The agent writes console input
into the FIFO (non-blocking open: ``ENXIO`` means nobody reads, i.e. the
server is not running). Nothing of this depends on the agent or an API
connection being alive, so agent and Podman restarts do not touch it.

Output comes from the engine's log of the container (``GET /logs``), which
the engine keeps for the container's whole life: a re-attaching agent reads
it again from the start and skips what it already numbered.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

CONSOLE_DIR = "/run/hostplane"
CONSOLE_NAME = "console"
MAX_LINE = 65_536
"""A partial line longer than this is delivered as a line of its own."""
MAX_BATCH_LINES = 2_000
MAX_BATCH_CHARS = 256 * 1024
INPUT_TIMEOUT = 5.0


def console_command(start_command: str) -> list[str]:
    """The container's argv: stdin from the console FIFO, then the start command
    in the same shell (so a start command that ``exec``\\ s its server makes the
    server PID 1, which receives the engine's signals)."""
    return ["/bin/sh", "-c", f"exec 0<>{CONSOLE_DIR}/{CONSOLE_NAME}\n{start_command}"]


def ensure_fifo(io_dir: Path) -> Path:
    """``io_dir/console`` as a FIFO (replacing anything else of that name)."""
    io_dir.mkdir(parents=True, exist_ok=True)
    # The container may run as a user other than root: it needs to open the
    # pipe. Host users cannot reach it: run/<id> is 0700.
    io_dir.chmod(0o755)
    path = io_dir / CONSOLE_NAME
    try:
        if stat.S_ISFIFO(path.lstat().st_mode):
            return path
        path.unlink()
    except FileNotFoundError:
        pass
    os.mkfifo(path, 0o666)
    path.chmod(0o666)
    return path


class ConsoleNotReading(Exception):
    """Nobody has the console FIFO open for reading (the server is not running)."""


class ConsoleBlocked(Exception):
    """The server has not read its console input for :data:`INPUT_TIMEOUT` seconds."""


async def write_console(path: Path, data: bytes, *, within: float = INPUT_TIMEOUT) -> None:
    """Write ``data`` into the console FIFO without ever blocking the event loop.

    Raises :class:`ConsoleNotReading` if no process holds the pipe, and
    :class:`ConsoleBlocked` if the pipe stays full for ``within`` seconds.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno in (errno.ENXIO, errno.ENOENT):
            raise ConsoleNotReading from exc
        raise
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    try:
        view = memoryview(data)
        while view:
            try:
                written = os.write(fd, view)
            except BlockingIOError:
                if loop.time() > deadline:
                    raise ConsoleBlocked from None
                await asyncio.sleep(0.02)
                continue
            except BrokenPipeError as exc:
                raise ConsoleNotReading from exc
            view = view[written:]
    finally:
        os.close(fd)


@dataclass
class LineSplitter:
    """Splits each stream's bytes into lines; a line's index counts every
    complete line of all streams in the order they completed, which is the
    same every time the same log is read again."""

    partial: dict[str, bytes] = field(default_factory=dict)

    def feed(self, stream: str, data: bytes) -> list[tuple[str, str]]:
        parts = (self.partial.get(stream, b"") + data).split(b"\n")
        rest = parts.pop()
        if len(rest) > MAX_LINE:
            parts.append(rest)
            rest = b""
        self.partial[stream] = rest
        return [(stream, _decode(p)) for p in parts]

    def flush(self) -> list[tuple[str, str]]:
        lines = [(stream, _decode(rest)) for stream, rest in self.partial.items() if rest]
        self.partial.clear()
        return lines


def _decode(raw: bytes) -> str:
    return raw.rstrip(b"\r").decode("utf-8", "replace")


def batches(lines: list[tuple[str, str]]) -> list[tuple[str, list[str]]]:
    """Consecutive lines of one stream, at most :data:`MAX_BATCH_LINES` lines
    or :data:`MAX_BATCH_CHARS` characters each (as the supervisor batches)."""
    out: list[tuple[str, list[str]]] = []
    size = 0
    for stream, line in lines:
        if (
            out
            and out[-1][0] == stream
            and len(out[-1][1]) < MAX_BATCH_LINES
            and size + len(line) <= MAX_BATCH_CHARS
        ):
            out[-1][1].append(line)
            size += len(line)
            continue
        out.append((stream, [line]))
        size = len(line)
    return out


def remove_quietly(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
