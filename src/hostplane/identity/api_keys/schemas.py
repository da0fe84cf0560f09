from __future__ import annotations

from datetime import datetime

from pydantic import AwareDatetime, Field

from hostplane.core.schemas import ApiInput, ApiModel
from hostplane.identity.api_keys.models import ApiKey, ApiKeyStatus


class ApiKeyCreate(ApiInput):
    name: str = Field(min_length=1, max_length=100, examples=["Discord Bot"])
    scopes: list[str] = Field(
        min_length=1,
        max_length=100,
        description="Permission strings (wildcards allowed) the key may use. Each must be "
        "covered by the creator's own permissions, or be a server-level permission (which "
        "the key then has only on servers its creator owns or shares).",
        examples=[["server.read", "server.start"]],
    )
    # Aware only: a time without a zone would be guessed, and a guessed expiry
    # can be hours off.
    expires_at: AwareDatetime | None = Field(
        default=None, description="When the key stops working (must be in the future)."
    )
    allowed_ips: list[str] | None = Field(
        default=None,
        max_length=100,
        description="IPv4/IPv6 addresses or CIDR networks the key may be used from; "
        "empty or absent means anywhere.",
        examples=[["203.0.113.7", "10.0.0.0/8", "2001:db8::/32"]],
    )


class ApiKeyOut(ApiModel):
    id: str
    name: str
    prefix: str = Field(description="The key's public part (`hp_xxxxxxxx`), to recognise it.")
    status: ApiKeyStatus
    scopes: list[str]
    allowed_ips: list[str]
    created_by: str | None = Field(description="The id of the user whose rights the key uses.")
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None = Field(description="Recorded at most once a minute.")
    revoked_at: datetime | None

    @classmethod
    def of(cls, key: ApiKey) -> ApiKeyOut:
        return cls(
            id=key.id,
            name=key.name,
            prefix=key.prefix,
            status=key.status,
            scopes=key.scopes,
            allowed_ips=key.allowed_ips,
            created_by=key.created_by_id,
            created_at=key.created_at,
            expires_at=key.expires_at,
            last_used_at=key.last_used_at,
            revoked_at=key.revoked_at,
        )


class ApiKeyCreated(ApiKeyOut):
    key: str = Field(
        description="The full key. Shown only in this response: store it now, it cannot be "
        "retrieved again."
    )

    @classmethod
    def of_new(cls, api_key: ApiKey, key: str) -> ApiKeyCreated:
        return cls(**ApiKeyOut.of(api_key).model_dump(by_alias=False), key=key)
