"""A webhook whose worker is killed (SIGKILL) after the event committed and before it
was delivered, with the panel and the workers as separate processes: a new worker
delivers it, exactly once, signed so that the ``standardwebhooks`` library accepts it."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.panel import live_panel
from tests.support.processes import free_port, stop_process
from tests.support.services import REDIS_URL
from tests.support.webhooks import receiver

# The panel and the workers: receivers here are on 127.0.0.1; retries come quickly.
ENV = {
    "HOSTPLANE_REDIS_URL": REDIS_URL,
    "HOSTPLANE_WEBHOOKS__ALLOW_PRIVATE_DESTINATIONS": "true",
    "HOSTPLANE_WEBHOOKS__RETRY_SCHEDULE_SECONDS": "[3, 1, 1, 1, 1]",
    "HOSTPLANE_WEBHOOKS__RETRY_JITTER": "0",
    "HOSTPLANE_WEBHOOKS__LEASE_SECONDS": "3",
    "HOSTPLANE_WEBHOOKS__POLL_INTERVAL_SECONDS": "0.2",
}


def start_worker(tmp_path: Path, env: dict[str, str], log_name: str) -> subprocess.Popen[bytes]:
    from tests.support.processes import hostplane_command

    with (tmp_path / log_name).open("wb") as log:
        return subprocess.Popen(
            hostplane_command("worker", "--data-dir", str(tmp_path)),
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )


async def wait_for(http: httpx.AsyncClient, url: str, check: Any, *, seconds: float) -> Any:
    data: Any = None
    for _ in range(int(seconds / 0.1)):
        data = (await http.get(url)).json()["data"]
        if check(data):
            return data
        await asyncio.sleep(0.1)
    raise AssertionError(f"{url}: still {data}")


async def test_a_worker_killed_before_delivery_still_delivers_once(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there yet: the receiver is down
    async with live_panel(tmp_path, **ENV) as live:
        http = live.http
        workers: list[subprocess.Popen[bytes]] = []
        try:
            created = await http.post(
                "/api/webhooks",
                json={"url": f"http://127.0.0.1:{port}/hooks", "events": ["user.created"]},
            )
            assert created.status_code == 201, created.text
            endpoint = created.json()["data"]
            workers.append(start_worker(tmp_path, live.env, "worker-1.log"))

            made = await http.post(
                "/api/users", json={"email": "arrives@example.com", "password": "long enough 1"}
            )
            assert made.status_code == 201, made.text
            deliveries = f"/api/webhooks/{endpoint['id']}/deliveries"
            # Committed, tried once against the dead receiver, waiting for its retry.
            first = await wait_for(http, deliveries, lambda d: d and d[0]["attemptLog"], seconds=30)
            assert first[0]["status"] == "pending", first
            assert first[0]["attemptLog"][0]["statusCode"] is None
            os.killpg(workers[0].pid, signal.SIGKILL)
            workers[0].wait()

            async with receiver(port=port, secrets=[endpoint["secret"]]) as hook:
                workers.append(start_worker(tmp_path, live.env, "worker-2.log"))
                done = await wait_for(
                    http,
                    deliveries,
                    lambda d: d[0]["status"] in ("succeeded", "failed"),
                    seconds=30,
                )
                await asyncio.sleep(2)  # time for a duplicate to show up, if there were one
            assert done[0]["status"] == "succeeded", done
            assert len(hook.received) == 1
            arrived = hook.received[0]
            assert arrived.verified
            assert arrived.payload["event"] == "user.created"
            assert arrived.payload["data"]["email"] == "arrives@example.com"
            assert arrived.headers["webhook-id"] == done[0]["eventId"]
            final = (await http.get(deliveries)).json()["data"]
            assert len(final) == 1
            assert [a["statusCode"] for a in final[0]["attemptLog"]] == [None, 200]
        finally:
            for process in workers:
                stop_process(process)
