from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from hostplane.core.schemas import ApiInput, ApiModel

TaskAction = Literal["restart", "start", "stop", "backup", "command"]
CatchUp = Literal["skip", "runOnce"]
RunStatus = Literal["queued", "running", "succeeded", "failed", "skipped"]

# Waits end: a step waits at most this long after the one before it.
MAX_STEP_DELAY_SECONDS = 900
MAX_STEPS = 10


class TaskStep(ApiInput):
    """A step of the chain after the task's own action."""

    action: TaskAction
    payload: dict[str, Any] | None = None
    delay_seconds: int = Field(
        default=0,
        ge=0,
        le=MAX_STEP_DELAY_SECONDS,
        description="Seconds to wait after the previous step finished.",
    )
    continue_on_failure: bool = False


class TaskCreate(ApiInput):
    server_id: str = Field(min_length=1, max_length=40)
    name: str = Field(min_length=1, max_length=100)
    action: TaskAction
    schedule: str = Field(min_length=1, max_length=120, description="Five-field cron.")
    payload: dict[str, Any] | None = None
    enabled: bool = True
    timezone: str = Field(default="UTC", min_length=1, max_length=64)
    steps: list[TaskStep] = Field(default_factory=list, max_length=MAX_STEPS)
    only_when_online: bool = False
    catch_up: CatchUp = "skip"


class TaskUpdate(ApiInput):
    name: str | None = Field(default=None, min_length=1, max_length=100)
    action: TaskAction | None = None
    schedule: str | None = Field(default=None, min_length=1, max_length=120)
    payload: dict[str, Any] | None = None
    enabled: bool | None = None
    timezone: str | None = Field(default=None, min_length=1, max_length=64)
    steps: list[TaskStep] | None = Field(default=None, max_length=MAX_STEPS)
    only_when_online: bool | None = None
    catch_up: CatchUp | None = None


class TaskOut(ApiModel):
    id: str
    server_id: str
    owner_id: str
    name: str
    action: TaskAction
    schedule: str
    timezone: str
    payload: dict[str, Any] | None
    enabled: bool
    steps: list[TaskStep]
    only_when_online: bool
    catch_up: CatchUp
    last_run_at: datetime | None
    next_run_at: datetime | None
    run_count: int
    created_at: datetime
    updated_at: datetime


class StepOutcome(ApiModel):
    index: int
    action: TaskAction
    status: Literal["pending", "running", "succeeded", "failed", "skipped"]
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: str | None = None


class TaskRunOut(ApiModel):
    id: str
    task_id: str
    server_id: str
    trigger: Literal["schedule", "manual", "catchUp"]
    scheduled_for: datetime
    status: RunStatus
    started_at: datetime | None
    finished_at: datetime | None
    deadline_at: datetime
    error: str | None
    steps: list[StepOutcome]
    job_id: str | None


class TaskExecuted(ApiModel):
    message: str
    task_id: str
    run_id: str
    job_id: str | None


class TaskDeleted(ApiModel):
    message: str
    task_id: str
