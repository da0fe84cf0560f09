"""Job handlers by name.

A domain registers its handlers at import time::

    @job_handler("server.install")
    async def install_server(ctx: JobContext, *, server_id: str) -> None: ...

Handlers must be idempotent: a job can run again after a worker dies mid-way.

A job type may also name a failure hook, run once the job has failed for
good — its last attempt failed, a permanent error, a timeout, or its worker
died holding its last attempt (the lease expired) — so that work the handler
left half-done is undone even when the handler never got to its own clean-up::

    @job_failure_hook("transfers.run")
    async def transfer_failed(ctx: JobContext, failure: JobFailure, *, transfer_id: str) -> None:
        ...

Hooks must be idempotent too: a worker that dies in one leaves it to the next.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

JobHandler = Callable[..., Awaitable[Any]]
FailureHook = Callable[..., Awaitable[None]]


@dataclass(frozen=True, slots=True)
class JobFailure:
    """Why a job failed for good, as recorded on it (safe to show a client)."""

    code: str
    message: str


@dataclass(frozen=True, slots=True)
class HandlerSpec:
    name: str
    func: JobHandler
    timeout_seconds: float | None
    # Run every this many seconds (maintenance such as log retention).
    every_seconds: float | None = None
    # Called as ``on_failure(ctx, failure, **args)`` once the job failed for good.
    on_failure: FailureHook | None = None


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
        hook = existing.on_failure if existing is not None else None
        self._handlers[name] = HandlerSpec(name, func, timeout_seconds, every_seconds, hook)

    def set_failure_hook(self, name: str, hook: FailureHook) -> None:
        spec = self._handlers.get(name)
        if spec is None:
            raise ValueError(f"register the handler of job type {name!r} before its failure hook")
        if spec.on_failure is not None and spec.on_failure is not hook:
            raise ValueError(f"job type {name!r} already has a failure hook")
        self._handlers[name] = dataclasses.replace(spec, on_failure=hook)

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


def job_failure_hook(
    name: str, *, on: JobRegistry | None = None
) -> Callable[[FailureHook], FailureHook]:
    """Register the decorated coroutine as the failure hook of job type ``name``."""

    def decorate(func: FailureHook) -> FailureHook:
        (on or registry).set_failure_hook(name, func)
        return func

    return decorate


__all__ = [
    "FailureHook",
    "HandlerSpec",
    "JobFailure",
    "JobHandler",
    "JobRegistry",
    "job_failure_hook",
    "job_handler",
    "registry",
]
