"""Errors that reach a client, and how they map to the envelope.

Services raise these; one handler renders them (see ``core/http``). Nothing
here imports FastAPI, so services can raise them freely.
"""

from __future__ import annotations

from typing import Any


class HostplaneError(Exception):
    """An expected failure with a status, a stable code and a safe message."""

    status: int = 400
    code: str = "BAD_REQUEST"
    # Refuse the request but commit what it wrote: security bookkeeping such
    # as revoking a session whose refresh token was replayed, or counting a
    # failed second-factor attempt, must survive the refusal.
    keep_changes: bool = False

    def __init__(
        self,
        message: str,
        *,
        details: Any = None,
        status: int | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        self.headers = headers or {}
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code


class ValidationFailed(HostplaneError):
    status = 400
    code = "VALIDATION_ERROR"


class Unauthorized(HostplaneError):
    status = 401
    code = "UNAUTHORIZED"


class Forbidden(HostplaneError):
    status = 403
    code = "FORBIDDEN"


class NotFound(HostplaneError):
    status = 404
    code = "NOT_FOUND"

    def __init__(self, resource: str, resource_id: str | None = None) -> None:
        details = {"resource": resource} | ({"id": resource_id} if resource_id else {})
        super().__init__(f"{resource.capitalize()} not found", details=details)


class Conflict(HostplaneError):
    status = 409
    code = "CONFLICT"


class Locked(HostplaneError):
    status = 423
    code = "LOCKED"


class PaymentRequired(HostplaneError):
    status = 402
    code = "INSUFFICIENT_FUNDS"


class RateLimited(HostplaneError):
    status = 429
    code = "RATE_LIMITED"


class ServiceUnavailable(HostplaneError):
    status = 503
    code = "SERVICE_UNAVAILABLE"


class ProviderUnavailable(ServiceUnavailable):
    """A third party (gateway, DNS, ACME, registrar) cannot be reached now."""

    code = "PROVIDER_UNAVAILABLE"
