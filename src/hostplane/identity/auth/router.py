"""``/api/auth/*`` and ``/.well-known/jwks.json``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from hostplane.commerce.wallet.router import wallet_out
from hostplane.core.errors import Forbidden, Unauthorized
from hostplane.core.http.deps import PrincipalDep, RuntimeDep, SessionDep, client_ip, require
from hostplane.core.http.envelope import Empty, Envelope, ok
from hostplane.core.principal import Principal
from hostplane.identity.auth import service, sync, two_factor
from hostplane.identity.auth.keys import key_ring
from hostplane.identity.auth.schemas import (
    AuthUser,
    LoginIn,
    LogoutIn,
    RecoveryCodes,
    RefreshIn,
    RegisterIn,
    SecondFactorIn,
    Session,
    SyncIn,
    TokenOut,
    TwoFactorChallengeOut,
    TwoFactorCodeIn,
    TwoFactorDisableIn,
    TwoFactorEnrolment,
)
from hostplane.identity.auth.sessions import TokenPair
from hostplane.identity.users.models import User
from hostplane.identity.users.service import describe_user, get_user

router = APIRouter(prefix="/api/auth", tags=["auth"])
jwks_router = APIRouter(tags=["auth"])

Authenticated = Annotated[Principal, Depends(require())]


async def _session_out(
    session: Any, user: User, pair: TokenPair, *, setup_required: bool = False
) -> Session:
    profile = AuthUser.model_validate(await describe_user(session, user))
    return Session(
        user_id=user.id,
        email=user.email,
        username=user.username,
        token=pair.access_token,
        refresh_token=pair.refresh_token,
        expires_in=pair.expires_in,
        two_factor_setup_required=setup_required,
        user=profile,
    )


async def _acting_user(session: Any, principal: Principal) -> User:
    if principal.kind != "user" or principal.user_id is None:
        raise Forbidden("Only a logged-in user can do this (not an API key)", code="USER_REQUIRED")
    return await get_user(session, principal.user_id)


@router.post("/register", response_model=Envelope[Session])
async def register(
    body: RegisterIn, request: Request, session: SessionDep, runtime: RuntimeDep
) -> Envelope[Session]:
    """Create a customer account and log it in (10 requests per minute)."""
    user, pair = await service.register(
        session,
        runtime,
        email=body.email,
        password=body.password,
        username=body.username,
        tenant_slug=body.tenant,
        ip=client_ip(request),
        user_agent=request.headers.get("user-agent"),
    )
    return ok(await _session_out(session, user, pair))


@router.post("/login", response_model=Envelope[Session | TwoFactorChallengeOut])
async def login(
    body: LoginIn, request: Request, session: SessionDep, runtime: RuntimeDep
) -> Envelope[Session | TwoFactorChallengeOut]:
    """Exchange email and password for tokens; with two-factor on, for a challenge first."""
    user, result = await service.login(
        session,
        runtime,
        email=body.email,
        password=body.password,
        tenant_slug=body.tenant,
        ip=client_ip(request),
        user_agent=request.headers.get("user-agent"),
    )
    if isinstance(result, service.TwoFactorChallenge):
        return ok(
            TwoFactorChallengeOut(
                challenge_token=result.challenge_token,
                expires_in=result.expires_in,
                user_id=result.user_id,
            )
        )
    setup = await service.two_factor_setup_required(session, user)
    return ok(await _session_out(session, user, result, setup_required=setup))


@router.post("/login/2fa", response_model=Envelope[Session])
async def login_second_factor(
    body: SecondFactorIn, request: Request, session: SessionDep, runtime: RuntimeDep
) -> Envelope[Session]:
    """Complete a login with a TOTP code or a recovery code."""
    user, pair = await service.complete_login(
        session,
        runtime,
        challenge_token=body.challenge_token,
        code=body.code,
        recovery_code=body.recovery_code,
        ip=client_ip(request),
        user_agent=request.headers.get("user-agent"),
    )
    return ok(await _session_out(session, user, pair))


@router.get("/me", response_model=Envelope[AuthUser])
async def me(session: SessionDep, principal: Authenticated) -> Envelope[AuthUser]:
    """The caller: profile, roles, tenant and effective permissions."""
    if principal.user_id is None:
        raise Unauthorized("Log in as a user to do this", code="USER_REQUIRED")
    user = await get_user(session, principal.user_id)
    described = await describe_user(session, user)
    if principal.kind == "api_key":
        described["permissions"] = sorted(principal.permissions)
    described["wallet"] = await wallet_out(session, tenant_id=user.tenant_id, user_id=user.id)
    return ok(AuthUser.model_validate(described))


@router.post("/refresh", response_model=Envelope[TokenOut])
async def refresh(body: RefreshIn, session: SessionDep, runtime: RuntimeDep) -> Envelope[TokenOut]:
    """Rotate a refresh token: a new pair; presenting a used token revokes the session."""
    pair = await service.refresh(session, runtime, refresh_token=body.refresh_token)
    return ok(
        TokenOut(
            token=pair.access_token, refresh_token=pair.refresh_token, expires_in=pair.expires_in
        )
    )


@router.post("/logout", response_model=Empty)
async def logout(
    session: SessionDep, principal: PrincipalDep, body: LogoutIn | None = None
) -> Empty:
    """End the caller's session (every token of it stops working)."""
    refresh_token = body.refresh_token if body else None
    if principal.session_id is None and refresh_token is None:
        raise Unauthorized("Send the access token or a refresh token to log out")
    await service.logout(session, session_id=principal.session_id, refresh_token=refresh_token)
    return Empty()


@router.post("/sync", response_model=Envelope[Session])
async def sync_external(
    request: Request, session: SessionDep, runtime: RuntimeDep, body: SyncIn | None = None
) -> Envelope[Session]:
    """Accept a token from a configured external issuer; create or update the local user."""
    token = (body.token if body else None) or _bearer(request)
    if not token:
        raise Unauthorized("Send the external token as the Bearer token or in the body")
    user, pair = await sync.sync_user(
        session, runtime, token, ip=client_ip(request), user_agent=request.headers.get("user-agent")
    )
    return ok(await _session_out(session, user, pair))


def _bearer(request: Request) -> str | None:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


@router.post("/2fa/enable", response_model=Envelope[TwoFactorEnrolment])
async def two_factor_enable(
    session: SessionDep, runtime: RuntimeDep, principal: Authenticated
) -> Envelope[TwoFactorEnrolment]:
    """Start two-factor enrolment: a secret and its otpauth:// URI for the authenticator app."""
    user = await _acting_user(session, principal)
    secret, uri = await two_factor.begin_enrollment(runtime, user)
    return ok(TwoFactorEnrolment(secret=secret, otpauth_url=uri))


@router.post("/2fa/confirm", response_model=Envelope[RecoveryCodes])
async def two_factor_confirm(
    body: TwoFactorCodeIn, session: SessionDep, runtime: RuntimeDep, principal: Authenticated
) -> Envelope[RecoveryCodes]:
    """Finish enrolment with a first code; returns ten recovery codes, shown once."""
    user = await _acting_user(session, principal)
    codes = await two_factor.confirm_enrollment(session, runtime, user, body.code)
    return ok(RecoveryCodes(recovery_codes=codes))


@router.post("/2fa/disable", response_model=Empty)
async def two_factor_disable(
    body: TwoFactorDisableIn, session: SessionDep, runtime: RuntimeDep, principal: Authenticated
) -> Empty:
    """Switch two-factor off (a current code or the password proves it is you)."""
    user = await _acting_user(session, principal)
    if await service.two_factor_setup_required(session, user, ignore_enabled=True):
        raise service.AccountDisabled(
            "Your role requires two-factor authentication", code="TWO_FACTOR_REQUIRED"
        )
    await two_factor.disable(session, runtime, user, code=body.code, password=body.password)
    return Empty()


@jwks_router.get("/.well-known/jwks.json")
async def jwks(runtime: RuntimeDep) -> dict[str, list[dict[str, str]]]:
    """The public keys that verify hostplane's access tokens (for agents, SFTP, other services)."""
    return (await key_ring(runtime)).jwks()
