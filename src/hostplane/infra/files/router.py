"""``/api/servers/{server_id}/files``: Catalyst's and QeinTech's file managers, one service.

Two routes also accept a one-time link instead of the ``Authorization``
header (C5, C6): ``GET .../files/download?token=`` and
``POST .../files/upload?token=``. Bodies stream: uploads are parsed as they
arrive and relayed to the node chunk by chunk; downloads are relayed the
same way back. Neither is ever held whole in memory.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Annotated, Any, Literal
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from hostplane.core.context import RequestContext
from hostplane.core.errors import Unauthorized, ValidationFailed
from hostplane.core.http.deps import Authenticated, PrincipalDep, RuntimeDep, client_ip
from hostplane.core.http.envelope import Envelope, ok
from hostplane.core.http.middleware import route_template
from hostplane.core.principal import Principal
from hostplane.core.runtime import Runtime
from hostplane.infra.files import links, service
from hostplane.infra.files.links import LinkClaims
from hostplane.infra.files.multipart import MultipartStream
from hostplane.infra.files.requests import check_path
from hostplane.infra.files.schemas import (
    ChmodBody,
    ChmodResult,
    CompressBody,
    CompressResult,
    CopyBody,
    CreateBody,
    DecompressBody,
    DecompressResult,
    DeleteBody,
    DeleteResult,
    FileContent,
    FileEntry,
    FileLink,
    FileResult,
    PullBody,
    RenameBody,
    UploadedFile,
    UploadResult,
    WriteBody,
)

if TYPE_CHECKING:
    pass

router = APIRouter(prefix="/api/servers/{server_id}/files", tags=["files"])

PathQuery = Annotated[str | None, Query(description="A path in the server's folder.")]
TokenQuery = Annotated[
    str | None, Query(description="A one-time link's token, instead of Authorization.")
]

# Room for the form's boundaries, part headers and the ``path`` field on top of
# the file bytes before the body as a whole is refused.
_FORM_OVERHEAD = 64 * 1024

_UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "path": {"type": "string", "description": "Target folder (send it first)."},
                        "file": {"type": "string", "format": "binary"},
                    },
                    "required": ["file"],
                }
            }
        }
    }
}


def _context(request: Request, principal: Principal) -> RequestContext:
    return RequestContext(
        principal=principal,
        request_id=getattr(request.state, "request_id", None),
        ip=client_ip(request),
        user_agent=request.headers.get("user-agent"),
        method=request.method,
        route=route_template(request.scope),
        path_params=dict(request.path_params),
    )


async def _target(
    request: Request,
    runtime: Runtime,
    principal: Principal,
    server_id: str,
    permissions: tuple[str, ...],
    *,
    change: bool = False,
) -> service.FileTarget:
    if not principal.is_authenticated:
        raise Unauthorized("Authentication required")
    return await service.open_target(
        runtime, _context(request, principal), server_id, permissions, change=change
    )


def _link_url(request: Request, runtime: Runtime, query: dict[str, str]) -> str:
    public = runtime.settings.public_url
    base = public.rstrip("/") if public else str(request.base_url).rstrip("/")
    return f"{base}{request.url.path}?{urlencode(query)}"


def _entries(found: list[Any]) -> list[FileEntry]:
    return [FileEntry.model_validate(entry) for entry in found]


# --- listing and reading ----------------------------------------------------------------------


@router.get("", response_model=Envelope[list[FileEntry]])
async def list_files(
    server_id: str,
    request: Request,
    runtime: RuntimeDep,
    principal: Authenticated,
    path: PathQuery = "/",
) -> Envelope[list[FileEntry]]:
    """A folder's entries, folders first (Catalyst; ``file.read``)."""
    target = await _target(request, runtime, principal, server_id, service.READ)
    return ok(_entries(await service.list_files(runtime, target, path)))


@router.get("/list", response_model=Envelope[list[FileEntry]])
async def list_files_qeintech(
    server_id: str,
    request: Request,
    runtime: RuntimeDep,
    principal: Authenticated,
    path: PathQuery = "/",
) -> Envelope[list[FileEntry]]:
    """QeinTech's listing; the same as ``GET .../files``."""
    target = await _target(request, runtime, principal, server_id, service.READ)
    return ok(_entries(await service.list_files(runtime, target, path)))


@router.get("/content", response_model=Envelope[FileContent])
async def file_content(
    server_id: str,
    request: Request,
    runtime: RuntimeDep,
    principal: Authenticated,
    path: PathQuery = None,
) -> Envelope[FileContent]:
    """A file's text, up to 5 MB (413 beyond; ``file.read-content`` or ``file.read``)."""
    target = await _target(request, runtime, principal, server_id, service.READ_CONTENT)
    content, size = await service.read_content(runtime, target, path)
    return ok(FileContent(path=path or "", content=content, size=size))


def _disposition(path: str) -> str:
    name = path.rstrip("/").rsplit("/", 1)[-1] or "download"
    fallback = "".join(c if 0x20 <= ord(c) < 0x7F and c not in '"\\' else "_" for c in name)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


async def _stream(
    runtime: Runtime, target: service.FileTarget, path: str, link: LinkClaims | None = None
) -> StreamingResponse:
    stack = contextlib.AsyncExitStack()
    # Entered here, not in the body: a missing file is still an error envelope.
    download = await stack.enter_async_context(service.open_download(runtime, target, path))
    if link is not None:
        # The first chunk is here: only now is the link spent, so a download
        # that failed before it can be retried with the same link.
        try:
            await links.spend(runtime, link)
        except BaseException:
            await stack.aclose()
            raise

    async def body() -> AsyncIterator[bytes]:
        async with stack:
            async for chunk in download.chunks():
                yield chunk

    return StreamingResponse(
        body(),
        media_type="application/octet-stream",
        headers={"Content-Disposition": _disposition(path), "Cache-Control": "no-store"},
    )


@router.get(
    "/download",
    response_model=Envelope[FileLink],
    responses={200: {"content": {"application/octet-stream": {}}}},
)
async def download(
    server_id: str,
    request: Request,
    runtime: RuntimeDep,
    principal: PrincipalDep,
    path: PathQuery = None,
    mode: Annotated[Literal["url"] | None, Query()] = None,
    token: TokenQuery = None,
) -> Any:
    """Stream a file (Catalyst), or with ``?mode=url`` a one-time URL for it (QeinTech,
    ``data {url, expiresAt}``). The URL carries ``token`` and works once, for five
    minutes, without ``Authorization`` (``file.read``)."""
    if token is not None:
        target, bound, claims = await service.open_link(
            runtime, _context(request, principal), server_id, token, purpose="download"
        )
        return await _stream(runtime, target, bound, claims)
    target = await _target(request, runtime, principal, server_id, service.READ)
    file_path = check_path(path)
    if mode == "url":
        await service.ensure_file(runtime, target, file_path)
        link, expires_at = service.issue_link(runtime, target, file_path, purpose="download")
        url = _link_url(request, runtime, {"path": file_path, "token": link})
        return ok(FileLink(url=url, expires_at=expires_at))
    return await _stream(runtime, target, file_path)


# --- uploads ----------------------------------------------------------------------------------


@router.get("/upload", response_model=Envelope[FileLink])
async def upload_link(
    server_id: str,
    request: Request,
    runtime: RuntimeDep,
    principal: Authenticated,
    path: PathQuery = "/",
) -> Envelope[FileLink]:
    """A one-time URL to ``POST`` a multipart upload into folder ``path`` (QeinTech's
    signed upload URL; ``file.write`` or ``file.create``). It works once, for five minutes,
    without ``Authorization``; the folder is the one signed into it."""
    target = await _target(request, runtime, principal, server_id, service.CREATE, change=True)
    folder = check_path(path, default="/")
    link, expires_at = service.issue_link(runtime, target, folder, purpose="upload")
    url = _link_url(request, runtime, {"path": folder, "token": link})
    return ok(FileLink(url=url, expires_at=expires_at))


@router.post("/upload", response_model=Envelope[UploadResult], openapi_extra=_UPLOAD_BODY)
async def upload(
    server_id: str,
    request: Request,
    runtime: RuntimeDep,
    principal: PrincipalDep,
    path: PathQuery = None,
    token: TokenQuery = None,
) -> Envelope[UploadResult]:
    """Catalyst's multipart upload: form fields ``path`` (the target folder, before the
    file) and ``file`` (several ``file`` parts are accepted). Up to 100 MB (413 beyond,
    nothing written). Authorized by a bearer token (``file.write`` or ``file.create``) or
    by a one-time link from ``GET .../files/upload``, whose folder then applies."""
    if token is not None:
        target, bound = await service.redeem_link(
            runtime, _context(request, principal), server_id, token, purpose="upload"
        )
        directory: str | None = bound
    else:
        target = await _target(request, runtime, principal, server_id, service.CREATE, change=True)
        directory = check_path(path, default="/") if path is not None else None
    declared = request.headers.get("content-length")
    max_upload = runtime.settings.files.upload_max_bytes
    limit = max_upload + _FORM_OVERHEAD
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise service.PayloadTooLarge(f"Uploads are limited to {max_upload} bytes")
    form = MultipartStream(
        request.headers.get("content-type", ""), request.stream(), limit, max_upload
    )
    uploaded: list[UploadedFile] = []
    while (part := await form.next_part()) is not None:
        if part.filename is None:
            value = await form.text(part.name)
            if part.name == "path" and token is None and path is None:
                directory = check_path(value, default="/")
            continue
        if directory is None:
            raise ValidationFailed(
                "Send the path field before the file (or pass ?path=)",
                details={"field": "path"},
            )
        written = await service.upload(runtime, target, directory, part.filename, form.data())
        uploaded.append(
            UploadedFile(path=str(written.get("path")), size=int(written.get("size", 0)))
        )
    if not uploaded:
        raise ValidationFailed("The form has no file", details={"field": "file"})
    return ok(UploadResult(message="File uploaded successfully", files=uploaded))


# --- changes ----------------------------------------------------------------------------------


@router.post("/create", response_model=Envelope[FileResult])
async def create(
    server_id: str,
    body: CreateBody,
    request: Request,
    runtime: RuntimeDep,
    principal: Authenticated,
) -> Envelope[FileResult]:
    """Catalyst: a new file with ``content``, or a folder with ``isDirectory``; 409 if a file
    is there already (``file.write`` or ``file.create``)."""
    target = await _target(request, runtime, principal, server_id, service.CREATE, change=True)
    made = await service.create(
        runtime, target, body.path, content=body.content, is_directory=body.is_directory
    )
    what = "Directory" if body.is_directory else "File"
    return ok(
        FileResult(message=f"{what} created", path=str(made.get("path")), size=made.get("size"))
    )


@router.post("/write", response_model=Envelope[FileResult])
async def write(
    server_id: str, body: WriteBody, request: Request, runtime: RuntimeDep, principal: Authenticated
) -> Envelope[FileResult]:
    """QeinTech: save ``content`` to ``path``, creating or replacing the file (up to 5 MB;
    ``file.write``, ``file.create`` or ``file.update``)."""
    target = await _target(request, runtime, principal, server_id, service.WRITE, change=True)
    written = await service.write_file(runtime, target, body.path, body.content)
    return ok(
        FileResult(message="File saved", path=str(written.get("path")), size=written.get("size"))
    )


@router.delete("", response_model=Envelope[DeleteResult])
async def delete_file(
    server_id: str,
    request: Request,
    runtime: RuntimeDep,
    principal: Authenticated,
    path: PathQuery = None,
) -> Envelope[DeleteResult]:
    """Catalyst: delete a file, or a folder with everything in it (``file.delete``)."""
    target = await _target(request, runtime, principal, server_id, service.DELETE, change=True)
    deleted = await service.delete(runtime, target, [check_path(path)])
    return ok(DeleteResult(message="File deleted successfully", deleted=deleted))


@router.post("/delete", response_model=Envelope[DeleteResult])
async def delete_files(
    server_id: str,
    body: DeleteBody,
    request: Request,
    runtime: RuntimeDep,
    principal: Authenticated,
) -> Envelope[DeleteResult]:
    """QeinTech: ``{paths: [...]}`` or ``{path}``; folders go with their content
    (``file.delete``)."""
    target = await _target(request, runtime, principal, server_id, service.DELETE, change=True)
    deleted = await service.delete(runtime, target, body.targets)
    return ok(DeleteResult(message="Files deleted successfully", deleted=deleted))


@router.post("/rename", response_model=Envelope[FileResult])
async def rename(
    server_id: str,
    body: RenameBody,
    request: Request,
    runtime: RuntimeDep,
    principal: Authenticated,
) -> Envelope[FileResult]:
    """``{from, to}`` or ``{source, destination}``; moves too, never replaces (409)
    (``file.write`` or ``file.update``)."""
    target = await _target(request, runtime, principal, server_id, service.UPDATE, change=True)
    path = await service.rename(runtime, target, body.old, body.new)
    return ok(FileResult(message="File renamed", path=path))


@router.post("/copy", response_model=Envelope[FileResult])
async def copy(
    server_id: str, body: CopyBody, request: Request, runtime: RuntimeDep, principal: Authenticated
) -> Envelope[FileResult]:
    """Copy a file or folder; without ``destination`` the copy is "name copy.ext" beside it
    (``file.write`` or ``file.create``)."""
    target = await _target(request, runtime, principal, server_id, service.CREATE, change=True)
    path = await service.copy(runtime, target, body.path, body.destination)
    return ok(FileResult(message="File copied", path=path))


@router.post("/chmod", response_model=Envelope[ChmodResult])
async def chmod(
    server_id: str, body: ChmodBody, request: Request, runtime: RuntimeDep, principal: Authenticated
) -> Envelope[ChmodResult]:
    """Set permission bits: ``mode`` as octal text (``"0755"``) or a number (``493``)
    (``file.write`` or ``file.update``)."""
    target = await _target(request, runtime, principal, server_id, service.UPDATE, change=True)
    mode = await service.chmod(runtime, target, body.path, body.mode)
    return ok(ChmodResult(message="Permissions changed", path=body.path, mode=mode))


@router.post("/compress", response_model=Envelope[CompressResult])
async def compress(
    server_id: str,
    body: CompressBody,
    request: Request,
    runtime: RuntimeDep,
    principal: Authenticated,
) -> Envelope[CompressResult]:
    """Pack ``paths`` into ``archiveName`` in ``destination`` (default ``/``); the suffix
    picks zip or tar.gz (``file.archive`` or ``file.write``)."""
    target = await _target(request, runtime, principal, server_id, service.ARCHIVE, change=True)
    archive_path = await service.compress(
        runtime, target, body.paths, body.archive_name, body.destination
    )
    return ok(CompressResult(message="Archive created", archive_path=archive_path))


@router.post("/decompress", response_model=Envelope[DecompressResult])
async def decompress(
    server_id: str,
    body: DecompressBody,
    request: Request,
    runtime: RuntimeDep,
    principal: Authenticated,
) -> Envelope[DecompressResult]:
    """Extract ``archivePath`` into ``targetPath`` (default: the archive's folder); the
    format is read from the archive itself (``file.archive`` or ``file.write``)."""
    target = await _target(request, runtime, principal, server_id, service.ARCHIVE, change=True)
    result = await service.decompress(runtime, target, body.archive_path, body.target_path)
    return ok(
        DecompressResult(
            message="Archive extracted",
            target_path=str(result.get("targetPath")),
            files=int(result.get("files", 0)),
            bytes=int(result.get("bytes", 0)),
        )
    )


@router.post("/pull", response_model=Envelope[FileResult])
async def pull(
    server_id: str, body: PullBody, request: Request, runtime: RuntimeDep, principal: Authenticated
) -> Envelope[FileResult]:
    """The node downloads ``url`` into ``directory``; private and local addresses are
    refused with 400 ``URL_REJECTED`` (``file.write`` or ``file.create``)."""
    target = await _target(request, runtime, principal, server_id, service.CREATE, change=True)
    result = await service.pull(runtime, target, body.url, body.directory, body.filename)
    return ok(
        FileResult(message="File downloaded", path=str(result.get("path")), size=result.get("size"))
    )
