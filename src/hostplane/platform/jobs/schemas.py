from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field, model_validator

from hostplane.core.schemas import ApiModel

JobStatus = Literal["queued", "running", "succeeded", "failed"]


class JobError(ApiModel):
    code: str
    message: str


class JobOut(ApiModel):
    id: str
    tenant_id: str | None
    type: str
    status: JobStatus
    target_id: str | None
    args: dict[str, Any]
    attempts: int
    max_attempts: int
    progress: int
    progress_message: str | None
    run_at: datetime = Field(description="When the job is (or was) due to run next.")
    started_at: datetime | None
    finished_at: datetime | None
    error: JobError | None = None
    created_at: datetime
    updated_at: datetime

    @model_validator(mode="before")
    @classmethod
    def _error_from_row(cls, value: Any) -> Any:
        code = getattr(value, "error_code", None)
        if code is None or isinstance(value, dict):
            return value
        fields = {name: getattr(value, name) for name in cls.model_fields if name != "error"}
        fields["error"] = {"code": code, "message": getattr(value, "error_message", "") or ""}
        return fields
