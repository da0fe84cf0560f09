"""``/health``, ``/status`` and ``/metrics``.

These answer in plain JSON (not the ``/api`` envelope): load balancers and
monitoring systems read them, and the mPanel document gives their shapes.
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Response
from pydantic import BaseModel

from hostplane import __version__
from hostplane.core.http.deps import RuntimeDep
from hostplane.core.schemas import ApiModel
from hostplane.platform.health import service

router = APIRouter(tags=["health"])

SERVICE_NAME = "hostplane-api"


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    service: str = SERVICE_NAME


class Status(ApiModel):
    service: str
    status: Literal["ok", "degraded", "down"]
    version: str
    uptime_seconds: int
    dependencies: dict[str, Literal["ok", "down"]]


@router.get("/health", response_model=Health)
async def health() -> Health:
    """Liveness: the process answers. Cheap enough for a load balancer to call often."""
    return Health()


@router.get("/status", response_model=Status, responses={503: {"model": Status}})
async def status(runtime: RuntimeDep, response: Response) -> Status:
    """Version, uptime and each dependency's state; 503 when the database is down."""
    dependencies = await service.dependency_states(runtime)
    overall: Literal["ok", "degraded", "down"] = "ok"
    if dependencies["database"] == "down":
        overall = "down"
        response.status_code = 503
    elif any(state == "down" for state in dependencies.values()):
        overall = "degraded"
    return Status(
        service=SERVICE_NAME,
        status=overall,
        version=__version__,
        uptime_seconds=runtime.uptime_seconds,
        dependencies=dependencies,
    )


@router.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
async def metrics(runtime: RuntimeDep) -> Response:
    """Prometheus exposition: request counts and latencies by route, jobs by status."""
    registry_owner = runtime.metrics
    try:
        for job_status, count in (await service.job_counts(runtime)).items():
            registry_owner.jobs.labels(job_status).set(count)
    except Exception:  # noqa: BLE001 - scrape still answers with the HTTP figures
        registry_owner.jobs.clear()
    return Response(registry_owner.render(), media_type="text/plain; version=0.0.4; charset=utf-8")
