"""Job handlers by name.

A domain registers its handlers at import time::

    @job_handler("server.install")
    async def install_server(ctx: JobContext, *, server_id: str) -> None: ...

Handlers must be idempotent: a job can run again after a worker dies mid-way.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

JobHandler = Callable[..., Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class HandlerSpec:
    name: str
    func: JobHandler
    timeout_seconds: float | None
    # Run every this many seconds (maintenance such as log retention).
    every_seconds: float | None = None


class JobRegistry:
    def __init__(self) -> None:
        self._handlers: dict[str, HandlerSpec] = {}

    def register(
        self,
        name: str,
        func: JobHandler,
        *,
        timeout_seconds: float | None = None,
        every_seconds: float | None = None,
    ) -> None:
        existing = self._handlers.get(name)
        if existing is not None and existing.func is not func:
            raise ValueError(f"a handler for job type {name!r} is already registered")
        self._handlers[name] = HandlerSpec(name, func, timeout_seconds, every_seconds)

    def get(self, name: str) -> HandlerSpec | None:
        return self._handlers.get(name)

    def recurring(self) -> list[HandlerSpec]:
        return [spec for spec in self._handlers.values() if spec.every_seconds]

    def names(self) -> list[str]:
        return sorted(self._handlers)


registry = JobRegistry()


def job_handler(
    name: str,
    *,
    timeout_seconds: float | None = None,
    every_seconds: float | None = None,
    on: JobRegistry | None = None,
) -> Callable[[Callable[..., Awaitable[Any]]], Callable[..., Awaitable[Any]]]:
    """Register the decorated coroutine as the handler of job type ``name``."""

    def decorate(func: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        (on or registry).register(
            name, func, timeout_seconds=timeout_seconds, every_seconds=every_seconds
        )
        return func

    return decorate


__all__ = ["HandlerSpec", "JobHandler", "JobRegistry", "job_handler", "registry"]
