"""A local Razorpay payment-links API for tests, and Razorpay's signed webhooks.

Speaks Razorpay's wire format: ``POST /v1/payment_links`` (JSON, Basic auth
with the key id and secret), ``GET /v1/payment_links/{id}``, the error body
``{"error": {"code": "BAD_REQUEST_ERROR", "description": ...}}``. A test pays
a link with :meth:`RazorpayEmulator.paid_webhook`, which returns the
``payment_link.paid`` body Razorpay would send and its
``X-Razorpay-Signature`` (HMAC-SHA256 of the raw body with the webhook
secret).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

KEY_ID = "rzp_test_hostplane"
KEY_SECRET = "emulator-key-secret"
WEBHOOK_SECRET = "emulator-webhook-secret"


def _id(prefix: str) -> str:
    return prefix + secrets.token_hex(7)


def sign(body: bytes, secret: str = WEBHOOK_SECRET) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class RazorpayEmulator:
    def __init__(self) -> None:
        self.links: dict[str, dict[str, Any]] = {}
        self.base_url = ""

    def _authorized(self, header: str | None) -> bool:
        if not header or not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except ValueError:
            return False
        return user == KEY_ID and password == KEY_SECRET

    def create_link(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        amount = body.get("amount")
        currency = body.get("currency", "INR")
        if not isinstance(amount, int) or isinstance(amount, bool) or amount < 100:
            return 400, _error("The amount must be atleast INR 1.00", "amount")
        reference = body.get("reference_id")
        if reference and any(link["reference_id"] == reference for link in self.links.values()):
            return 400, _error(
                f"payment link with given reference_id {reference} already exists", "reference_id"
            )
        now = int(time.time())
        link_id = _id("plink_")
        link = {
            "accept_partial": bool(body.get("accept_partial", False)),
            "amount": amount,
            "amount_paid": 0,
            "callback_method": body.get("callback_method", ""),
            "callback_url": body.get("callback_url", ""),
            "cancelled_at": 0,
            "created_at": now,
            "currency": currency,
            "customer": body.get("customer", {}),
            "description": body.get("description", ""),
            "expire_by": body.get("expire_by", 0),
            "expired_at": 0,
            "first_min_partial_amount": 0,
            "id": link_id,
            "notes": body.get("notes") or [],
            "notify": body.get("notify", {"email": False, "sms": False}),
            "payments": None,
            "reference_id": reference or "",
            "reminder_enable": False,
            "reminders": [],
            "short_url": f"{self.base_url}/i/{link_id[6:]}",
            "status": "created",
            "updated_at": now,
            "upi_link": bool(body.get("upi_link", False)),
            "user_id": "",
        }
        self.links[link_id] = link
        return 200, link

    def paid_webhook(self, link_id: str) -> tuple[bytes, dict[str, str]]:
        """The payer paid the link by UPI: the webhook body and headers Razorpay sends."""
        link = self.links[link_id]
        now = int(time.time())
        payment_id = _id("pay_")
        order_id = _id("order_")
        link.update(status="paid", amount_paid=link["amount"], updated_at=now)
        link["payments"] = [
            {
                "amount": link["amount"],
                "created_at": now,
                "method": "upi",
                "payment_id": payment_id,
                "status": "captured",
            }
        ]
        event = {
            "entity": "event",
            "account_id": "acc_" + secrets.token_hex(7),
            "event": "payment_link.paid",
            "contains": ["payment_link", "order", "payment"],
            "payload": {
                "payment_link": {"entity": dict(link)},
                "order": {
                    "entity": {
                        "id": order_id,
                        "entity": "order",
                        "amount": link["amount"],
                        "amount_paid": link["amount"],
                        "amount_due": 0,
                        "currency": link["currency"],
                        "receipt": link["reference_id"],
                        "status": "paid",
                        "notes": link["notes"],
                        "created_at": now,
                    }
                },
                "payment": {
                    "entity": {
                        "id": payment_id,
                        "entity": "payment",
                        "amount": link["amount"],
                        "currency": link["currency"],
                        "status": "captured",
                        "order_id": order_id,
                        "method": "upi",
                        "vpa": "payer@upi",
                        "captured": True,
                        "notes": link["notes"],
                        "created_at": now,
                    }
                },
            },
            "created_at": now,
        }
        body = json.dumps(event).encode()
        headers = {
            "Content-Type": "application/json",
            "X-Razorpay-Signature": sign(body),
            "X-Razorpay-Event-Id": _id("evt_"),
        }
        return body, headers


def _error(description: str, field: str | None = None) -> dict[str, Any]:
    return {
        "error": {
            "code": "BAD_REQUEST_ERROR",
            "description": description,
            "source": "business",
            "step": "payment_initiation",
            "reason": "input_validation_failed",
            "metadata": {},
            "field": field,
        }
    }


def _handler(emulator: RazorpayEmulator) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _answer(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _guard(self) -> bool:
            if emulator._authorized(self.headers.get("Authorization")):
                return True
            self._answer(401, _error("Authentication failed"))
            return False

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            if not self._guard():
                return
            if self.path.rstrip("/") != "/v1/payment_links":
                self._answer(400, _error("The requested URL was not found on the server."))
                return
            try:
                body = json.loads(raw or b"{}")
            except ValueError:
                self._answer(400, _error("The request body is not valid JSON"))
                return
            self._answer(*emulator.create_link(body))

        def do_GET(self) -> None:
            if not self._guard():
                return
            prefix = "/v1/payment_links/"
            link = (
                emulator.links.get(self.path[len(prefix) :])
                if self.path.startswith(prefix)
                else None
            )
            if link is None:
                self._answer(400, _error("The id provided does not exist"))
                return
            self._answer(200, link)

        def log_message(self, *_args: Any) -> None:
            return

    return Handler


@contextmanager
def razorpay_emulator() -> Iterator[RazorpayEmulator]:
    """The emulator listening on 127.0.0.1 (a thread of the test process)."""
    emulator = RazorpayEmulator()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(emulator))
    emulator.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield emulator
    finally:
        server.shutdown()
        server.server_close()
