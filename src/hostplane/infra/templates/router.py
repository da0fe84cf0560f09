"""``/api/templates``: how servers are installed and run; egg import for operators."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends

from hostplane.core.http.deps import Authenticated, SessionDep, require
from hostplane.core.http.envelope import Empty, Envelope, ok
from hostplane.core.principal import Principal
from hostplane.infra.servers import service as servers
from hostplane.infra.templates import service
from hostplane.infra.templates.models import Template
from hostplane.infra.templates.schemas import TemplateCreate, TemplateOut, TemplateUpdate
from hostplane.infra.templates.variables import definitions

router = APIRouter(tags=["templates"])

TemplateManager = Annotated[Principal, Depends(require("template.manage"))]


def _out(template: Template) -> TemplateOut:
    fields = {name: getattr(template, name) for name in TemplateOut.model_fields}
    fields["variables"] = [d.as_dict() for d in definitions(template)]
    return TemplateOut.model_validate(fields)


@router.get("/api/templates", response_model=Envelope[list[TemplateOut]])
async def list_templates(
    session: SessionDep, _principal: Authenticated
) -> Envelope[list[TemplateOut]]:
    """Every template of the tenant."""
    return ok([_out(t) for t in await service.list_templates(session)])


@router.get("/api/templates/{template_id}", response_model=Envelope[TemplateOut])
async def get_template(
    template_id: str, session: SessionDep, _principal: Authenticated
) -> Envelope[TemplateOut]:
    """One template."""
    return ok(_out(await service.get_template(session, template_id)))


@router.post("/api/templates", response_model=Envelope[TemplateOut], status_code=201)
async def create_template(
    body: TemplateCreate, session: SessionDep, _principal: TemplateManager
) -> Envelope[TemplateOut]:
    """Create a template. Values may hold ``{{VAR}}`` placeholders."""
    template = await service.create_template(session, body.model_dump(mode="json", by_alias=False))
    return ok(_out(template))


@router.put("/api/templates/{template_id}", response_model=Envelope[TemplateOut])
async def update_template(
    template_id: str, body: TemplateUpdate, session: SessionDep, _principal: TemplateManager
) -> Envelope[TemplateOut]:
    """Change a template; servers use the new values from their next install or start."""
    changes = body.model_dump(mode="json", by_alias=False, exclude_unset=True)
    template = await service.update_template(session, template_id, changes)
    return ok(_out(template))


@router.delete("/api/templates/{template_id}", response_model=Empty)
async def delete_template(
    template_id: str, session: SessionDep, _principal: TemplateManager
) -> Empty:
    """Delete a template; 409 while servers use it."""
    await service.get_template(session, template_id)
    await servers.ensure_template_unused(session, template_id)
    await service.delete_template(session, template_id)
    return Empty()


@router.post("/api/admin/templates/import", response_model=Envelope[TemplateOut], status_code=201)
async def import_egg(
    egg: Annotated[dict[str, Any], Body(description="A Pterodactyl or Pelican egg (JSON).")],
    session: SessionDep,
    _principal: TemplateManager,
) -> Envelope[TemplateOut]:
    """Create a template from a Pterodactyl or Pelican egg."""
    return ok(_out(await service.import_egg(session, egg)))
