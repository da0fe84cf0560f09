from __future__ import annotations

from datetime import datetime

from pydantic import Field

from hostplane.core.schemas import ApiInput, ApiModel


class TransferBody(ApiInput):
    target_node_id: str = Field(min_length=1, max_length=64)


class TransferOut(ApiModel):
    id: str
    server_id: str
    source_node_id: str
    target_node_id: str
    status: str
    """``pending``, ``copying``, ``committing``, ``completed`` or ``failed``."""
    archive_bytes: int | None
    checksum: str | None
    route: str | None
    """``direct`` (node to node) or ``relayed`` (through the panel), once copied."""
    error: str | None
    created_at: datetime
    finished_at: datetime | None


class TransferServer(ApiModel):
    id: str
    name: str
    previous_node: str
    """Where the server is now (it moves only when the copy is verified)."""
    current_node: str
    target_node: str


class TransferStarted(ApiModel):
    message: str
    server: TransferServer
    transfer: TransferOut
    job_id: str
    """Follow it at ``/api/jobs/{jobId}`` or with ``hostplane jobs watch``."""
