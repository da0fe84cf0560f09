"""``hostplane up`` keeps its local agent alive.

The agent is a child process of ``up``. If it dies (a crash, an OOM kill, a
``kill -9``), this restarts it with exponential backoff (reset once a child
has stayed up for a while), logging each exit and restart. The servers keep
running meanwhile: their supervisors are not the agent's children, and the
new agent re-attaches to them. The node shows offline from the moment the
old agent's socket closed until the new one has shaken hands.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable

import structlog

log = structlog.get_logger(__name__)

MIN_DELAY = 1.0
MAX_DELAY = 30.0
# A child that lived this long was healthy: the next restart is quick again.
STABLE_AFTER = 60.0
POLL_SECONDS = 0.5
STOP_TIMEOUT = 15.0


class AgentWatch:
    """Start a child with ``spawn`` and restart it whenever it exits, until :meth:`stop`."""

    def __init__(
        self,
        spawn: Callable[[], subprocess.Popen[bytes]],
        *,
        min_delay: float = MIN_DELAY,
        max_delay: float = MAX_DELAY,
        stable_after: float = STABLE_AFTER,
    ) -> None:
        self._spawn = spawn
        self.min_delay = min_delay
        self.max_delay = max_delay
        self.stable_after = stable_after
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self.restarts = 0

    def start(self) -> None:
        self.process = self._spawn()
        self._thread = threading.Thread(target=self._watch, name="agent-watch", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        attempt = 0
        started = time.monotonic()
        while not self._stopping.wait(POLL_SECONDS):
            process = self.process
            if process is None:
                return
            code = process.poll()
            if code is None:
                continue
            if time.monotonic() - started >= self.stable_after:
                attempt = 0
            delay = min(self.max_delay, self.min_delay * 2**attempt)
            attempt = min(attempt + 1, 20)
            log.warning("up.agent_exited", exit_code=code, restart_in_seconds=delay)
            if self._stopping.wait(delay):
                return
            with self._lock:
                if self._stopping.is_set():
                    return
                try:
                    self.process = self._spawn()
                except OSError as exc:
                    # Tried again after the next delay.
                    log.error("up.agent_restart_failed", error=str(exc))
                    continue
                self.restarts += 1
            started = time.monotonic()
            log.info("up.agent_restarted", pid=self.process.pid, restarts=self.restarts)

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop watching, then the agent (SIGTERM, SIGKILL after ``timeout``)."""
        with self._lock:
            self._stopping.set()
        if self._thread is not None:
            self._thread.join(POLL_SECONDS * 4)
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
