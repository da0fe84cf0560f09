"""Each process's copy of the runtime configuration, kept current.

Reading the configuration must cost a request nothing (the maintenance check
runs on every ``/api`` call), so every process holds it in memory. A change
reaches every process through ``config.changed`` on the event bus, which
carries the new configuration; as a backstop (an event lost while Redis was
away) the copy is re-read from the database when it is older than
:data:`REFRESH_SECONDS`. A process that cannot read the database keeps the
copy it has.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

import structlog
from pydantic import ValidationError

from hostplane.core.events.bus import Event, Subscription
from hostplane.core.runtime import Runtime
from hostplane.platform.admin import service
from hostplane.platform.admin.schemas import RuntimeConfig, defaults_from

log = structlog.get_logger(__name__)

EXTENSION_KEY = "platform.config"
REFRESH_SECONDS = 5.0
# A database that does not answer must not hold the refresher up for long.
LOAD_TIMEOUT_SECONDS = 5.0


@dataclass
class LiveConfig:
    config: RuntimeConfig
    version: int = -1
    loaded_at: float = field(default_factory=time.monotonic)


def _holder(runtime: Runtime) -> LiveConfig:
    holder = runtime.extensions.get(EXTENSION_KEY)
    if not isinstance(holder, LiveConfig):
        holder = LiveConfig(config=defaults_from(runtime.settings))
        runtime.extensions[EXTENSION_KEY] = holder
    return holder


def current(runtime: Runtime) -> RuntimeConfig:
    """The configuration this process applies now (a dictionary lookup, no I/O)."""
    return _holder(runtime).config


def apply(runtime: Runtime, config: RuntimeConfig, version: int) -> bool:
    """Hold ``config`` if it is newer than the copy held; ``True`` when it was applied."""
    holder = _holder(runtime)
    holder.loaded_at = time.monotonic()
    if version <= holder.version:
        return False
    holder.config = config
    holder.version = version
    limits = config.rate_limits
    runtime.rate_limiter.configure(auth=limits.auth, default=limits.default)
    log.info("config.applied", version=version, maintenance=config.maintenance.enabled)
    return True


async def reload(runtime: Runtime) -> None:
    """Read the configuration from the database and hold it if it is newer."""
    async with (
        asyncio.timeout(LOAD_TIMEOUT_SECONDS),
        runtime.unit_of_work(read_only=True) as session,
    ):
        out = await service.load(session, runtime.settings)
    apply(runtime, RuntimeConfig.model_validate(out.model_dump()), out.version)


def _from_event(runtime: Runtime, event: Event) -> None:
    data: dict[str, Any] = event.data
    try:
        config = RuntimeConfig.model_validate(data["config"])
        version = int(data["version"])
    except (KeyError, TypeError, ValueError, ValidationError):
        log.warning("config.bad_event", event_id=event.id)
        return
    apply(runtime, config, version)


class ConfigFollower:
    """Loads the configuration, then follows its changes until closed.

    The subscription is opened before the first read, so a change committed
    in between is not missed. A bus that cannot be reached (Redis down at
    start) does not stop the process: the copy is then kept current by the
    periodic re-read alone, and subscribing is tried again with each one.
    """

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._stack = contextlib.AsyncExitStack()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        subscription = await self._subscribe()
        await self._reload_quietly()
        self._task = asyncio.create_task(self._follow(subscription), name="config-follower")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._stack.aclose()

    async def _subscribe(self) -> Subscription | None:
        try:
            async with asyncio.timeout(LOAD_TIMEOUT_SECONDS):
                return await self._stack.enter_async_context(
                    self._runtime.bus.subscribe(service.CONFIG_CHANGED)
                )
        except (ConnectionError, OSError, TimeoutError) as exc:
            log.warning("config.subscribe_failed", error=str(exc)[:200])
            return None

    async def _reload_quietly(self) -> None:
        try:
            await reload(self._runtime)
        except Exception as exc:  # noqa: BLE001 - keep the copy held; try again later
            _holder(self._runtime).loaded_at = time.monotonic()
            log.warning("config.reload_failed", error=type(exc).__name__)

    async def _follow(self, subscription: Subscription | None) -> None:
        while True:
            age = time.monotonic() - _holder(self._runtime).loaded_at
            within = max(0.0, REFRESH_SECONDS - age)
            event: Event | None = None
            if subscription is None:
                await asyncio.sleep(within)
            else:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(within):
                        event = await subscription.get()
            if event is not None:
                _from_event(self._runtime, event)
                continue
            await self._reload_quietly()
            if subscription is None:
                subscription = await self._subscribe()
