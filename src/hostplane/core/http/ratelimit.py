"""The rate-limit dependency the app applies to every route.

Being a route dependency, it only sees requests that matched a route: an
unknown path (404) or a wrong method (405) is answered before it and is not
counted. A refused request is not counted either (the moving window records
admitted requests only), so a client that keeps hammering while refused is
back as soon as its oldest admitted request ages out.

Successful responses carry ``X-RateLimit-Limit``, ``X-RateLimit-Remaining``
and ``X-RateLimit-Reset`` (epoch seconds); a refusal is ``RATE_LIMITED`` 429
with the same headers and ``Retry-After``. FastAPI copies the headers of the
injected :class:`~fastapi.Response` only into responses it builds from a
route's return value; a route that returns its own ``Response`` object or
fails with an error builds a new response without them. The counted result is
kept on the request state as ``rate_limit`` for code that builds responses
itself.
"""

from __future__ import annotations

from fastapi import Response
from starlette.requests import HTTPConnection

from hostplane.core.errors import RateLimited
from hostplane.core.http.deps import RuntimeDep, client_ip, get_principal
from hostplane.core.http.middleware import route_template
from hostplane.core.principal import ANONYMOUS
from hostplane.core.ratelimit import BYPASS_PERMISSION, caller_key, route_group


async def enforce_rate_limit(
    connection: HTTPConnection, response: Response, runtime: RuntimeDep
) -> None:
    """Count the request against its caller's limit; refuse it with 429 when spent.

    Callers holding ``rate-limit.bypass`` are neither counted nor given the
    headers: a limit that does not apply to them is not theirs to read.
    """
    # WebSocket sessions are long-lived and authenticated by their token on
    # connect; what they send is the gateway's to meter, not a request count.
    if connection.scope["type"] != "http":
        return
    limiter = runtime.rate_limiter
    if not limiter.enabled:
        return
    group = route_group(route_template(connection.scope))
    try:
        principal = await get_principal(connection, runtime)
    except Exception:  # noqa: BLE001 - the route resolves the caller again and answers
        # The limiter only ever adds a 429; every other outcome is the
        # route's. A caller that cannot be resolved (a stale token, the
        # database behind the authenticator down) is counted by address, and
        # a route that needs the caller fails as it would without the limiter
        # while public ones (login, /health, /status) keep answering. A stream
        # of bad tokens is thus limited like any anonymous traffic.
        principal = ANONYMOUS
    if principal.has(BYPASS_PERMISSION):
        return
    result = await limiter.hit(group, caller_key(group, principal, client_ip(connection)))
    if result is None:
        return
    connection.state.rate_limit = result
    if not result.allowed:
        retry_after = result.retry_after
        raise RateLimited(
            f"Rate limit exceeded. Try again in {retry_after} seconds.",
            details={"limit": result.limit, "retryAfter": retry_after},
            headers=result.headers(),
        )
    response.headers.update(result.headers())
