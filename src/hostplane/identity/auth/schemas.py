from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from hostplane.commerce.wallet.schemas import WalletOut
from hostplane.core.schemas import ApiInput, ApiModel


class LoginIn(ApiInput):
    email: str = Field(min_length=3, max_length=320)
    password: str = Field(min_length=1, max_length=1024)
    tenant: str | None = Field(
        default=None, description="Tenant slug; the default tenant when omitted."
    )


class RegisterIn(ApiInput):
    email: str = Field(min_length=3, max_length=320)
    password: str = Field(max_length=1024, description="At least 8 characters.")
    username: str | None = Field(default=None, max_length=64)
    tenant: str | None = None


class SecondFactorIn(ApiInput):
    challenge_token: str = Field(min_length=10, max_length=200)
    code: str | None = Field(default=None, max_length=12)
    recovery_code: str | None = Field(default=None, max_length=40)


class RefreshIn(ApiInput):
    refresh_token: str = Field(min_length=10, max_length=200)


class LogoutIn(ApiInput):
    refresh_token: str | None = Field(default=None, max_length=200)


class SyncIn(ApiInput):
    token: str | None = Field(
        default=None, description="The external token (or send it as the Bearer token)."
    )


class TwoFactorCodeIn(ApiInput):
    code: str = Field(min_length=6, max_length=12)


class TwoFactorDisableIn(ApiInput):
    code: str | None = Field(default=None, max_length=12)
    password: str | None = Field(default=None, max_length=1024)


class AuthUser(ApiModel):
    """The caller as the documents show it (Catalyst, mPanel, SkyPANEL, QeinTech)."""

    id: str
    name: str
    email: str
    username: str
    first_name: str | None
    last_name: str | None
    role: str | None = Field(description="The highest role, for clients that show one.")
    roles: list[str]
    tenant_id: str
    permissions: list[str]
    two_factor_enabled: bool
    status: str
    created_at: datetime
    wallet: WalletOut | None = Field(
        default=None, description="QeinTech's dual balance: coins and credits."
    )


class Session(ApiModel):
    """A token pair, with the Catalyst fields at the top level."""

    user_id: str
    email: str
    username: str
    token: str
    refresh_token: str
    token_type: Literal["Bearer"] = "Bearer"  # noqa: S105 - the scheme name, not a secret
    expires_in: int
    two_factor_setup_required: bool = False
    user: AuthUser


class TwoFactorChallengeOut(ApiModel):
    two_factor_required: Literal[True] = True
    challenge_token: str
    expires_in: int
    user_id: str


class TokenOut(ApiModel):
    token: str
    refresh_token: str
    token_type: Literal["Bearer"] = "Bearer"  # noqa: S105 - the scheme name, not a secret
    expires_in: int


class TwoFactorEnrolment(ApiModel):
    secret: str
    otpauth_url: str


class RecoveryCodes(ApiModel):
    enabled: Literal[True] = True
    recovery_codes: list[str] = Field(description="Shown once. Each works once.")
