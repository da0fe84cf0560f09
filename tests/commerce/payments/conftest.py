"""Payments tests run against the local Stripe emulator (a process) and Razorpay emulator."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from hostplane.core.config import Settings
from tests.conftest import make_settings
from tests.support.payments import gateway_settings
from tests.support.razorpay_emulator import RazorpayEmulator, razorpay_emulator
from tests.support.stripe_emulator import stripe_emulator


@pytest.fixture(scope="session")
def stripe_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The Stripe emulator's base URL (one process for the whole run)."""
    with stripe_emulator(tmp_path_factory.mktemp("stripe") / "stripe.log") as base_url:
        yield base_url


@pytest.fixture
def razorpay_api() -> Iterator[RazorpayEmulator]:
    with razorpay_emulator() as emulator:
        yield emulator


@pytest.fixture
def settings(
    tmp_path: Path, _postgres_schema: None, stripe_api: str, razorpay_api: RazorpayEmulator
) -> Settings:
    return make_settings(
        tmp_path,
        payments=gateway_settings(stripe_base=stripe_api, razorpay_base=razorpay_api.base_url),
    )
