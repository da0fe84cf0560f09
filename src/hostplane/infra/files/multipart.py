"""``multipart/form-data`` parsed as the body arrives, for streamed uploads."""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from hostplane.core.errors import ValidationFailed
from hostplane.infra.files import service

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

_FIELD_MAX_BYTES = 8 * 1024
_MAX_PARTS = 100


@dataclass
class FormPart:
    name: str
    filename: str | None


class MultipartStream:
    """``multipart/form-data`` parsed as the body arrives.

    The parser's callbacks only queue events; the caller pulls them, so file
    bytes move on at the pace the node accepts them and at most one body
    chunk's worth is held at a time.
    """

    def __init__(
        self, content_type: str, body: AsyncIterator[bytes], limit: int, max_upload: int
    ) -> None:
        self._max_upload = max_upload
        kind, options = parse_options_header(content_type)
        boundary = options.get(b"boundary")
        if kind != b"multipart/form-data" or not boundary:
            raise ValidationFailed(
                "Send the upload as multipart/form-data", details={"field": "file"}
            )
        self._body = body
        self._limit = limit
        self._received = 0
        self._events: deque[tuple[str, bytes]] = deque()
        self._headers: dict[bytes, bytes] = {}
        self._field = b""
        self._value = b""
        self._finished = False
        self._in_part = False
        self.parts = 0
        callbacks: MultipartCallbacks = {
            "on_part_begin": self._part_begin,
            "on_header_field": self._header_field,
            "on_header_value": self._header_value,
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
        }
        self._parser = MultipartParser(boundary, callbacks)

    def _part_begin(self) -> None:
        self._headers = {}

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        self._headers[self._field.lower()] = self._value
        self._field = self._value = b""

    def _headers_finished(self) -> None:
        self._events.append(("part", self._headers.get(b"content-disposition", b"")))

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        self._events.append(("data", data[start:end]))

    def _part_end(self) -> None:
        self._events.append(("end", b""))

    async def _next_event(self) -> tuple[str, bytes] | None:
        while not self._events:
            if self._finished:
                return None
            chunk = await anext(self._body, b"")
            if not chunk:
                self._finished = True
                self._parser.finalize()
                continue
            self._received += len(chunk)
            if self._received > self._limit:
                raise service.PayloadTooLarge(f"Uploads are limited to {self._max_upload} bytes")
            try:
                self._parser.write(chunk)
            except MultipartParseError as exc:
                raise ValidationFailed("The multipart body is malformed") from exc
        return self._events.popleft()

    async def next_part(self) -> FormPart | None:
        """The next part's name and file name; skips what is left of the current one."""
        while (event := await self._next_event()) is not None:
            kind, value = event
            if kind != "part":
                continue
            self.parts += 1
            if self.parts > _MAX_PARTS:
                raise ValidationFailed("The form has too many parts")
            _disposition_kind, options = parse_options_header(value)
            name = options.get(b"name", b"").decode("utf-8", "replace")
            raw_filename = options.get(b"filename")
            filename = None
            if raw_filename is not None:
                # Some browsers send the client's full path; only the name is meant.
                text = raw_filename.decode("utf-8", "replace")
                filename = text.replace("\\", "/").rsplit("/", 1)[-1]
            return FormPart(name=name, filename=filename)
        return None

    async def data(self) -> AsyncIterator[bytes]:
        """The current part's bytes, as they arrive."""
        while (event := await self._next_event()) is not None:
            kind, value = event
            if kind == "data":
                if value:
                    yield value
            elif kind == "end":
                return
        raise ValidationFailed("The multipart body ended inside a part")

    async def text(self, field: str) -> str:
        value = bytearray()
        async for chunk in self.data():
            value += chunk
            if len(value) > _FIELD_MAX_BYTES:
                raise ValidationFailed(f"{field} is too long", details={"field": field})
        return value.decode("utf-8", "replace")
