"""``/api/servers/{server_id}/transfer``: Catalyst's transfer, with a real copy."""

from __future__ import annotations

from fastapi import APIRouter

from hostplane.core.http.deps import Authenticated, SessionDep
from hostplane.core.http.envelope import Envelope, ok
from hostplane.infra.transfers import jobs as _jobs  # noqa: F401 - registers the job handlers
from hostplane.infra.transfers import service
from hostplane.infra.transfers.schemas import (
    TransferBody,
    TransferOut,
    TransferServer,
    TransferStarted,
)

router = APIRouter(prefix="/api/servers/{server_id}", tags=["transfers"])


@router.post("/transfer", response_model=Envelope[TransferStarted])
async def transfer_server(
    server_id: str, body: TransferBody, session: SessionDep, principal: Authenticated
) -> Envelope[TransferStarted]:
    """Move a stopped server to ``targetNodeId``: the files are copied node to node and
    verified, then the server and its allocations move. Follow ``transfer.status`` (or
    ``operation_progress`` on the socket); on any failure the server stays where it was."""
    transfer, server, source, target, job_id = await service.request_transfer(
        session, principal, server_id, body.target_node_id
    )
    return ok(
        TransferStarted(
            message="Server transfer started",
            server=TransferServer(
                id=server.id,
                name=server.name,
                previous_node=source.name,
                current_node=source.name,
                target_node=target.name,
            ),
            transfer=TransferOut.model_validate(transfer),
            job_id=job_id,
        )
    )


@router.get("/transfers", response_model=Envelope[list[TransferOut]])
async def list_transfers(
    server_id: str, session: SessionDep, principal: Authenticated
) -> Envelope[list[TransferOut]]:
    """The server's transfers, newest first."""
    found = await service.list_transfers(session, principal, server_id)
    return ok([TransferOut.model_validate(t) for t in found])
