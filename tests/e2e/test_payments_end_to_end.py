"""``hostplane up`` with Stripe pointed at the local emulator: a top-up paid over HTTP."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.payments import STRIPE_WEBHOOK_SECRET, stripe_signed
from tests.support.processes import base_env, free_port, hostplane_process
from tests.support.stripe_emulator import SECRET_KEY, pay, stripe_emulator

pytestmark = pytest.mark.e2e


def wait_for_credits(base_url: str, headers: dict[str, str], wanted: float) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while True:
        wallet: dict[str, Any] = httpx.get(
            f"{base_url}/api/economy/wallet", headers=headers
        ).json()["data"]
        if wallet["credits"] == wanted or time.monotonic() > deadline:
            return wallet
        time.sleep(0.2)


def test_a_stripe_top_up_is_paid_credited_once_and_invoiced(tmp_path: Path) -> None:
    data = tmp_path / "data"
    port = free_port()
    with stripe_emulator(tmp_path / "stripe.log") as stripe_base:
        env = base_env(
            HOSTPLANE_PAYMENTS__STRIPE__SECRET_KEY=SECRET_KEY,
            HOSTPLANE_PAYMENTS__STRIPE__WEBHOOK_SECRET=STRIPE_WEBHOOK_SECRET,
            HOSTPLANE_PAYMENTS__STRIPE__API_BASE=stripe_base,
        )
        with hostplane_process(
            ["up", "--data-dir", str(data), "--port", str(port)],
            port=port,
            log_path=tmp_path / "up.log",
            env=env,
        ) as panel:
            credentials = re.search(r"Log in as\s+(\S+) with password (\S+)", panel.output())
            assert credentials, panel.output()
            token = httpx.post(
                f"{panel.base_url}/api/auth/login",
                json={"email": credentials.group(1), "password": credentials.group(2)},
            ).json()["data"]["token"]
            headers = {"Authorization": f"Bearer {token}"}

            answer = httpx.post(
                f"{panel.base_url}/api/billing/top-up",
                json={"amount": "42.50", "gateway": "stripe"},
                headers={**headers, "Idempotency-Key": "e2e-topup"},
                timeout=30,
            )
            assert answer.status_code == 200, answer.text + panel.output()
            topup = answer.json()["data"]
            assert topup["paymentUrl"].startswith(stripe_base)

            body, signed = stripe_signed(pay(stripe_base, topup["reference"]))
            for _ in range(3):
                delivered = httpx.post(
                    f"{panel.base_url}/api/billing/webhook/stripe", content=body, headers=signed
                )
                assert delivered.status_code == 200, delivered.text
            refused = httpx.post(
                f"{panel.base_url}/api/payments/stripe/webhook",
                content=body,
                headers={**signed, "Stripe-Signature": "t=1,v1=00"},
            )
            assert refused.status_code == 401

            wallet = wait_for_credits(panel.base_url, headers, 42.5)
            assert wallet["credits"] == 42.5, panel.output()
            # Late replays change nothing.
            again = httpx.post(
                f"{panel.base_url}/api/payments/stripe/webhook", content=body, headers=signed
            )
            assert again.json()["data"]["duplicate"] is True
            time.sleep(1)
            assert wait_for_credits(panel.base_url, headers, 42.5)["credits"] == 42.5

            invoices = httpx.get(f"{panel.base_url}/api/billing/invoices", headers=headers).json()
            [invoice] = invoices["data"]
            assert (invoice["number"], invoice["status"], invoice["amount"]) == (
                "INV-000001",
                "paid",
                42.5,
            )
            pdf = httpx.get(f"{panel.base_url}{invoice['pdfUrl']}", headers=headers)
            assert pdf.status_code == 200
            assert pdf.headers["content-type"] == "application/pdf"
            assert pdf.content.startswith(b"%PDF")
