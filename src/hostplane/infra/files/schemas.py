from __future__ import annotations

from datetime import datetime

from pydantic import Field, StrictInt, StrictStr, model_validator

from hostplane.core.schemas import ApiInput, ApiModel

# Paths are only typed here: their content (NUL bytes, '..', length) is checked
# by the service after the caller is authorized, so a stranger learns nothing
# from the answer.


class FileEntry(ApiModel):
    name: str
    size: int
    is_directory: bool
    is_symlink: bool = False
    mode: str | None = Field(default=None, description='Permission bits in octal, e.g. "0644".')
    modified: str | None = Field(default=None, description="ISO 8601, UTC.")


class FileContent(ApiModel):
    path: str
    content: str
    size: int


class FileLink(ApiModel):
    url: str = Field(description="Works once, without an Authorization header.")
    expires_at: datetime


class FileResult(ApiModel):
    message: str
    path: str
    size: int | None = None


class UploadedFile(ApiModel):
    path: str
    size: int


class UploadResult(ApiModel):
    message: str
    files: list[UploadedFile]


class DeleteResult(ApiModel):
    message: str
    deleted: int


class ChmodResult(ApiModel):
    message: str
    path: str
    mode: str


class CompressResult(ApiModel):
    message: str
    archive_path: str


class DecompressResult(ApiModel):
    message: str
    target_path: str
    files: int
    bytes: int


class CreateBody(ApiInput):
    """Catalyst: a file with optional content, or a directory."""

    path: str
    content: str | None = None
    is_directory: bool = False


class WriteBody(ApiInput):
    """QeinTech: save content to a file (created or replaced)."""

    path: str
    content: str


class DeleteBody(ApiInput):
    """``{paths: [...]}`` or ``{path}``."""

    paths: list[str] | None = Field(default=None, max_length=1000)
    path: str | None = None

    @model_validator(mode="after")
    def _one_shape(self) -> DeleteBody:
        if (self.paths is None) == (self.path is None):
            raise ValueError("give either paths or path")
        return self

    @property
    def targets(self) -> list[str]:
        return list(self.paths) if self.paths is not None else [self.path or ""]


class RenameBody(ApiInput):
    """``{from, to}`` or ``{source, destination}``."""

    source: str | None = None
    from_: str | None = Field(default=None, alias="from")
    destination: str | None = None
    to: str | None = None

    @model_validator(mode="after")
    def _one_of_each(self) -> RenameBody:
        if (self.source is None) == (self.from_ is None):
            raise ValueError("give either from or source")
        if (self.destination is None) == (self.to is None):
            raise ValueError("give either to or destination")
        return self

    @property
    def old(self) -> str:
        return self.source if self.source is not None else self.from_ or ""

    @property
    def new(self) -> str:
        return self.destination if self.destination is not None else self.to or ""


class CopyBody(ApiInput):
    path: str
    destination: str | None = Field(
        default=None, description='Defaults to "name copy.ext" beside the original.'
    )


class ChmodBody(ApiInput):
    path: str
    mode: StrictInt | StrictStr = Field(description='Octal text ("0755") or a number (493).')


class CompressBody(ApiInput):
    paths: list[str] = Field(max_length=1000)
    archive_name: str | None = Field(
        default=None,
        description="Suffix .zip, .tar.gz/.tgz or .tar.xz picks the format; "
        "anything else gets .tar.gz. Defaults to a dated name.",
    )
    destination: str = Field(default="/", description="The folder the archive goes into.")


class DecompressBody(ApiInput):
    archive_path: str
    target_path: str | None = Field(default=None, description="Defaults to the archive's folder.")


class PullBody(ApiInput):
    url: str
    directory: str = "/"
    filename: str | None = None
