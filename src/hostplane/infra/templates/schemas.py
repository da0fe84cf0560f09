from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import Field

from hostplane.core.schemas import ApiInput, ApiModel

VARIABLE_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"


class TemplatePort(ApiModel):
    internal: int = Field(ge=1, le=65535)
    external: int | None = Field(default=None, ge=1, le=65535)


class TemplateVariable(ApiInput):
    """A variable in Pterodactyl's egg shape; ``rules`` are Laravel rules
    (``required|string|max:20``)."""

    name: str | None = Field(default=None, max_length=191)
    description: str | None = Field(default=None, max_length=5000)
    env_variable: str = Field(min_length=1, max_length=191, pattern=VARIABLE_NAME)
    default_value: str = Field(default="", max_length=4096)
    user_viewable: bool = True
    user_editable: bool = True
    rules: str | list[Annotated[str, Field(max_length=2000)]] = Field(
        default="nullable|string", max_length=2000
    )


class TemplateVariableOut(ApiModel):
    name: str
    description: str | None
    env_variable: str
    default_value: str
    user_viewable: bool
    user_editable: bool
    rules: str


class TemplateOut(ApiModel):
    id: str
    name: str
    description: str | None
    docker_image: str
    start_command: str
    stop_command: str | None
    ports: list[TemplatePort]
    environment: dict[str, str]
    required_variables: list[str]
    variables: list[TemplateVariableOut] = Field(
        description="Every declared variable, including those the older fields imply."
    )
    features: dict[str, Any]
    install_script: str | None
    install_image: str | None
    created_at: datetime
    updated_at: datetime


class TemplateCreate(ApiInput):
    name: str = Field(min_length=1, max_length=100)
    description: str | None = Field(default=None, max_length=5000)
    docker_image: str = Field(min_length=1, max_length=255)
    start_command: str = Field(min_length=1, max_length=10000)
    stop_command: str | None = Field(default=None, max_length=255)
    ports: list[TemplatePort] = Field(default_factory=list)
    environment: dict[str, str] = Field(default_factory=dict)
    required_variables: list[str] = Field(default_factory=list)
    variables: list[TemplateVariable] = Field(default_factory=list, max_length=200)
    features: dict[str, Any] = Field(default_factory=dict)
    install_script: str | None = Field(default=None, max_length=200_000)
    install_image: str | None = Field(default=None, max_length=255)


class TemplateUpdate(ApiInput):
    name: str | None = Field(default=None, min_length=1, max_length=100)
    description: str | None = Field(default=None, max_length=5000)
    docker_image: str | None = Field(default=None, min_length=1, max_length=255)
    start_command: str | None = Field(default=None, min_length=1, max_length=10000)
    stop_command: str | None = Field(default=None, max_length=255)
    ports: list[TemplatePort] | None = None
    environment: dict[str, str] | None = None
    required_variables: list[str] | None = None
    variables: list[TemplateVariable] | None = Field(default=None, max_length=200)
    features: dict[str, Any] | None = None
    install_script: str | None = Field(default=None, max_length=200_000)
    install_image: str | None = Field(default=None, max_length=255)
