from __future__ import annotations

from typing import Literal

from pydantic import Field

from hostplane.core.schemas import ApiModel
from hostplane.identity.permissions.catalogue import Permission


class PermissionOut(ApiModel):
    name: str = Field(description="The permission string, `resource.action`.")
    description: str
    scope: Literal["global", "server"] = Field(
        description="`server`: may also be granted for one server (a subuser); "
        "`global`: only through roles and API keys."
    )
    sources: list[str] = Field(
        description="The documents it comes from: catalyst, qeintech, mpanel, aura, skypanel, "
        "pterodactyl, hostplane."
    )
    aura_flag: str | None = Field(
        default=None, description="The Aura `can*` admin flag this permission replaces."
    )
    pterodactyl_key: str | None = Field(
        default=None, description="Pterodactyl's key, where hostplane spells it differently."
    )

    @classmethod
    def of(cls, permission: Permission) -> PermissionOut:
        return cls(
            name=permission.name,
            description=permission.description,
            scope=permission.scope.value,
            sources=[source.value for source in permission.sources],
            aura_flag=permission.aura_flag,
            pterodactyl_key=permission.pterodactyl_key,
        )
