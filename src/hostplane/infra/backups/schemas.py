from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from hostplane.core.schemas import ApiInput, ApiModel

BackupStatus = Literal["pending", "in_progress", "completed", "failed"]


class BackupCreate(ApiInput):
    name: str | None = Field(default=None, min_length=1, max_length=100)
    locked: bool = False


class BackupLock(ApiInput):
    locked: bool = True


class BackupOut(ApiModel):
    id: str
    server_id: str
    node_id: str
    name: str
    path: str
    """Where the archive lives on its node, relative to the agent's backup folder."""
    size_mb: float | None
    size_bytes: int | None
    checksum: str | None
    status: BackupStatus
    locked: bool
    error: str | None
    created_at: datetime
    completed_at: datetime | None


class BackupStarted(ApiModel):
    message: str
    backup_id: str
    backup_name: str
    status: BackupStatus
    job_id: str
    """Follow it at ``/api/jobs/{jobId}`` or with ``hostplane jobs watch``."""


class BackupMessage(ApiModel):
    message: str
    backup_id: str
    job_id: str | None = None


class BackupLink(ApiModel):
    url: str = Field(description="Works once, without an Authorization header.")
    expires_at: datetime
