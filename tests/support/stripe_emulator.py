"""A local Stripe API for tests: localstripe, extended with what it lacks.

Run as its own process (``python -m tests.support.stripe_emulator --port N``)
through :func:`stripe_emulator`. localstripe's own command listens on every
interface and keeps its data in /tmp; this one binds 127.0.0.1 only and keeps
everything in memory.

localstripe has no Prices and no Checkout Sessions; they are added here in
Stripe's wire format (form-encoded requests, the objects Stripe answers), with
Stripe's idempotency keys. A test completes a session the way a payer would
with ``POST /_test/checkout/sessions/{id}/pay``, which answers the
``checkout.session.completed`` event (and delivers it to webhooks registered
with localstripe's ``/_config/webhooks/{id}``).
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from tests.support.processes import free_port

REPOSITORY = Path(__file__).resolve().parents[2]
SECRET_KEY = "sk_test_hostplane_emulator"


def _int(value: Any, name: str) -> int:
    from localstripe.errors import UserError

    try:
        number = int(value)
    except (TypeError, ValueError):
        raise UserError(400, f"Invalid integer: {name}") from None
    if number < 0:
        raise UserError(400, f"Invalid integer: {name}")
    return number


def _extend() -> Any:
    """localstripe's app with Prices and Checkout Sessions; nothing written to disk."""
    from aiohttp import web
    from localstripe import resources, server
    from localstripe.errors import UserError
    from localstripe.resources import Event, Product, StripeObject, random_id, store
    from localstripe.webhooks import schedule_webhook

    # Keep the store in memory: the stock one pickles itself to /tmp on every write.
    resources.Store.dump_to_disk = lambda self: None  # type: ignore[method-assign]
    resources.Store.try_load_from_disk = lambda self: None  # type: ignore[method-assign]

    class Price(StripeObject):  # type: ignore[misc]
        object = "price"
        _id_prefix = "price_"

        def __init__(
            self,
            currency: Any = None,
            unit_amount: Any = None,
            product: Any = None,
            product_data: Any = None,
            active: Any = True,
            metadata: Any = None,
            nickname: Any = None,
            **kwargs: Any,
        ) -> None:
            if kwargs:
                raise UserError(400, "Received unknown parameter: " + ", ".join(kwargs))
            if not isinstance(currency, str) or len(currency) != 3:
                raise UserError(400, "Missing required param: currency.")
            amount = _int(unit_amount, "unit_amount")
            if product is None:
                if not isinstance(product_data, dict) or not product_data.get("name"):
                    raise UserError(400, "Missing required param: product or product_data.")
                product = Product(name=product_data["name"]).id
            elif not isinstance(product, str):
                raise UserError(400, "Invalid product")
            else:
                Product._api_retrieve(product)
            super().__init__()
            self.currency = currency.lower()
            self.unit_amount = amount
            self.unit_amount_decimal = str(amount)
            self.product = product
            self.active = str(active).lower() != "false"
            self.metadata = metadata or {}
            self.nickname = nickname
            self.type = "one_time"
            self.billing_scheme = "per_unit"
            self.recurring = None

    class CheckoutSession(StripeObject):  # type: ignore[misc]
        object = "checkout.session"
        _id_prefix = "cs_test_"

        def __init__(
            self,
            mode: Any = None,
            line_items: Any = None,
            success_url: Any = None,
            cancel_url: Any = None,
            client_reference_id: Any = None,
            customer_email: Any = None,
            metadata: Any = None,
            payment_intent_data: Any = None,
            payment_method_types: Any = None,
            **kwargs: Any,
        ) -> None:
            if kwargs:
                raise UserError(400, "Received unknown parameter: " + ", ".join(kwargs))
            if mode != "payment":
                raise UserError(400, "This emulator supports mode=payment only.")
            if not isinstance(success_url, str) or not success_url.startswith("http"):
                raise UserError(400, "Missing required param: success_url.")
            if not isinstance(line_items, list) or not line_items:
                raise UserError(400, "Missing required param: line_items.")
            prices = []
            for item in line_items:
                if not isinstance(item, dict):
                    raise UserError(400, "Invalid line_items")
                quantity = _int(item.get("quantity", 1), "quantity")
                if "price" in item:
                    price = Price._api_retrieve(item["price"])
                elif isinstance(item.get("price_data"), dict):
                    price = Price(**item["price_data"])
                else:
                    raise UserError(400, "line_items need a price or price_data")
                prices.append((price, quantity))
            currencies = {price.currency for price, _ in prices}
            if len(currencies) != 1:
                raise UserError(400, "All line items must use one currency.")
            super().__init__()
            self.mode = mode
            self.currency = currencies.pop()
            self.amount_subtotal = sum(price.unit_amount * q for price, q in prices)
            self.amount_total = self.amount_subtotal
            self.success_url = success_url
            self.cancel_url = cancel_url
            self.client_reference_id = client_reference_id
            self.customer_email = customer_email
            self.metadata = metadata or {}
            self.payment_status = "unpaid"
            self.status = "open"
            self.payment_intent = None
            self.customer = None
            self.expires_at = self.created + 24 * 3600
            self.url = f"{BASE_URL}/c/pay/{self.id}"
            self._line_items = [
                {
                    "id": "li_" + random_id(14),
                    "object": "item",
                    "amount_subtotal": price.unit_amount * q,
                    "amount_total": price.unit_amount * q,
                    "currency": price.currency,
                    "description": price.product,
                    "price": price._export(),
                    "quantity": q,
                }
                for price, q in prices
            ]
            self._intent_metadata = (payment_intent_data or {}).get("metadata", {})

    idempotent: dict[str, str] = {}

    async def create_session(request: web.Request) -> web.Response:
        key = request.headers.get("Idempotency-Key")
        if key and key in idempotent:
            return server.json_response(CheckoutSession._api_retrieve(idempotent[key])._export())
        data = await server.get_post_data(request) or {}
        data.pop("expand", None)
        session = CheckoutSession(**data)
        if key:
            idempotent[key] = session.id
        return server.json_response(session._export())

    def retrieve_session(request: web.Request) -> web.Response:
        return server.json_response(
            CheckoutSession._api_retrieve(request.match_info["id"])._export()
        )

    def list_sessions(request: web.Request) -> web.Response:
        sessions = [v._export() for k, v in store.items() if k.startswith("checkout.session:")]
        return server.json_response(
            {"object": "list", "data": sessions, "has_more": False, "url": "/v1/checkout/sessions"}
        )

    def session_line_items(request: web.Request) -> web.Response:
        session = CheckoutSession._api_retrieve(request.match_info["id"])
        return server.json_response(
            {"object": "list", "data": session._line_items, "has_more": False, "url": request.path}
        )

    def expire_session(request: web.Request) -> web.Response:
        session = CheckoutSession._api_retrieve(request.match_info["id"])
        if session.status != "open":
            raise UserError(400, "Only open sessions can be expired.")
        session.status = "expired"
        schedule_webhook(Event("checkout.session.expired", session))
        return server.json_response(session._export())

    def pay_session(request: web.Request) -> web.Response:
        # What Stripe does when the payer completes the page.
        session = CheckoutSession._api_retrieve(request.match_info["id"])
        if session.status != "open":
            raise UserError(400, "This session is not open.")
        session.status = "complete"
        session.payment_status = "paid"
        session.payment_intent = "pi_" + random_id(24)
        event = Event("checkout.session.completed", session)
        schedule_webhook(event)
        return server.json_response(event._export())

    async def create_price(request: web.Request) -> web.Response:
        data = await server.get_post_data(request) or {}
        data.pop("expand", None)
        return server.json_response(Price(**data)._export())

    def retrieve_price(request: web.Request) -> web.Response:
        return server.json_response(Price._api_retrieve(request.match_info["id"])._export())

    app = server.app
    app.router.add_post("/v1/checkout/sessions", create_session)
    app.router.add_get("/v1/checkout/sessions", list_sessions)
    app.router.add_get("/v1/checkout/sessions/{id}", retrieve_session)
    app.router.add_get("/v1/checkout/sessions/{id}/line_items", session_line_items)
    app.router.add_post("/v1/checkout/sessions/{id}/expire", expire_session)
    app.router.add_post("/v1/prices", create_price)
    app.router.add_get("/v1/prices/{id}", retrieve_price)
    # Under /_config/: localstripe lets these through without a key, like its own.
    app.router.add_post("/_config/test/checkout/sessions/{id}/pay", pay_session)
    return app


BASE_URL = ""


def main() -> None:
    global BASE_URL
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    BASE_URL = f"http://127.0.0.1:{args.port}"
    from aiohttp import web

    web.run_app(_extend(), host="127.0.0.1", port=args.port, print=None)


@contextlib.contextmanager
def stripe_emulator(log_path: Path) -> Iterator[str]:
    """The emulator as a process on 127.0.0.1; its base URL until the block ends."""
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.support.stripe_emulator", "--port", str(port)],
            cwd=REPOSITORY,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the Stripe emulator exited:\n{log_path.read_text()}")
            try:
                httpx.get(f"{base_url}/v1/balance", auth=(SECRET_KEY, ""), timeout=1)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        yield base_url
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def pay(base_url: str, session_id: str) -> dict[str, Any]:
    """Complete a Checkout Session as its payer; the ``checkout.session.completed`` event."""
    response = httpx.post(f"{base_url}/_config/test/checkout/sessions/{session_id}/pay")
    response.raise_for_status()
    event: dict[str, Any] = response.json()
    return event


if __name__ == "__main__":
    main()
