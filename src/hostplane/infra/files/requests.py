"""What a file request names, checked before anything reaches a node: paths,
file names, permission modes and pull URLs."""

from __future__ import annotations

from typing import Final
from urllib.parse import urlsplit

from hostplane.core.errors import ValidationFailed

MAX_PATH_BYTES: Final = 4096
MAX_NAME_BYTES: Final = 255
MAX_URL_LENGTH: Final = 2048


def invalid(field: str, message: str) -> ValidationFailed:
    return ValidationFailed(message, details={"field": field})


def check_path(value: str | None, *, field: str = "path", default: str | None = None) -> str:
    """``value`` if it can name something in the server's folder (400 otherwise).

    A leading slash means the server's folder; ``..`` is never needed there
    and is refused, as are NUL bytes and paths beyond the agent's bounds.
    """
    if value is None or value == "":
        if default is not None:
            return default
        raise invalid(field, f"{field} is required")
    if "\x00" in value:
        raise invalid(field, f"{field} cannot contain a NUL byte")
    try:
        encoded = value.encode("utf-8")
    except UnicodeEncodeError:
        raise invalid(field, f"{field} is not valid text") from None
    if len(encoded) > MAX_PATH_BYTES:
        raise invalid(field, f"{field} is longer than {MAX_PATH_BYTES} bytes")
    for part in value.split("/"):
        if part == "..":
            raise invalid(field, f"{field} cannot contain '..'")
        if len(part.encode("utf-8")) > MAX_NAME_BYTES:
            raise invalid(field, f"a name in {field} is longer than {MAX_NAME_BYTES} bytes")
    return value


def check_name(value: str | None, *, field: str) -> str:
    """One plain file name: no slash, not ``.`` or ``..``."""
    name = check_path(value, field=field)
    if "/" in name or name in (".", ".."):
        raise invalid(field, f"{field} must be a plain file name")
    return name


def parse_mode(value: int | str) -> int:
    """``"0755"``, ``"755"``, ``"0o755"`` or ``493`` as permission bits (0 to 0777)."""
    if isinstance(value, str):
        text = value.strip().lower().removeprefix("0o")
        if not text or len(text) > 4 or any(c not in "01234567" for c in text):
            raise invalid("mode", "mode must be octal permission bits such as 0755")
        value = int(text, 8)
    if not 0 <= value <= 0o777:
        raise invalid("mode", "mode must be between 0 and 0777")
    return value


def check_url(value: str) -> str:
    """An http(s) URL the node may fetch; which hosts it may reach is the agent's call."""
    if len(value) > MAX_URL_LENGTH or any(ord(c) < 0x21 for c in value):
        raise invalid("url", "url is not a valid URL")
    try:
        parts = urlsplit(value)
    except ValueError:
        raise invalid("url", "url is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise invalid("url", "url must be an http or https URL")
    return value


def join(directory: str, name: str) -> str:
    return directory.rstrip("/") + "/" + name


def parent(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[0] or "/"


# --- who may act where ------------------------------------------------------------------------
