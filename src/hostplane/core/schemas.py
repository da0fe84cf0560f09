"""The base for every Pydantic model that crosses the HTTP boundary."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel


class ApiModel(BaseModel):
    """camelCase on the wire, snake_case in Python, built from ORM rows."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        from_attributes=True,
        serialize_by_alias=True,
    )


class ApiInput(ApiModel):
    """A request body: unknown fields are refused instead of silently ignored."""

    model_config = ConfigDict(extra="forbid")
