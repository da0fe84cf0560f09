"""``hostplane up`` restarts its agent when it dies, and the node tells the truth meanwhile."""

import os
import re
import signal
import time
from pathlib import Path

import httpx
import pytest

from tests.support.processes import agent_pids, base_env, free_port, hostplane_process

pytestmark = pytest.mark.e2e


def node_online(base_url: str, headers: dict[str, str]) -> bool:
    listed = httpx.get(f"{base_url}/api/nodes", headers=headers).json()["data"]
    return bool(listed) and bool(listed[0]["isOnline"])


def wait_for(check: object, within: float) -> float:
    """Seconds until ``check()`` is true; fails after ``within``."""
    started = time.monotonic()
    while not check():  # type: ignore[operator]
        assert time.monotonic() - started < within, "not reached in time"
        time.sleep(0.1)
    return time.monotonic() - started


def test_a_killed_agent_is_restarted_and_power_answers_503_while_it_is_down(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    port = free_port()
    with hostplane_process(
        ["up", "--data-dir", str(data), "--port", str(port)],
        port=port,
        log_path=tmp_path / "up.log",
        env=base_env(),
    ) as panel:
        credentials = re.search(r"Log in as\s+(\S+) with password (\S+)", panel.output())
        assert credentials, panel.output()
        token = httpx.post(
            f"{panel.base_url}/api/auth/login",
            json={"email": credentials.group(1), "password": credentials.group(2)},
        ).json()["data"]["token"]
        headers = {"Authorization": f"Bearer {token}"}
        wait_for(lambda: node_online(panel.base_url, headers), 30)
        node_id = httpx.get(f"{panel.base_url}/api/nodes", headers=headers).json()["data"][0]["id"]
        template = httpx.post(
            f"{panel.base_url}/api/templates",
            json={"name": "Sleeper", "dockerImage": "img", "startCommand": "sleep 600"},
            headers=headers,
        ).json()["data"]
        server = httpx.post(
            f"{panel.base_url}/api/servers",
            json={
                "name": "sleeper",
                "templateId": template["id"],
                "nodeId": node_id,
                "allocatedMemoryMb": 64,
                "allocatedCpuCores": 0.1,
                "allocatedDiskMb": 64,
            },
            headers=headers,
        )
        assert server.status_code == 201, server.text
        server_id = server.json()["data"]["id"]

        (first,) = agent_pids(data)
        os.kill(first, signal.SIGKILL)
        # Offline as soon as the socket closed, not after the heartbeat window.
        wait_for(lambda: not node_online(panel.base_url, headers), 5)

        started = time.monotonic()
        refused = httpx.post(
            f"{panel.base_url}/api/servers/{server_id}/start", headers=headers, timeout=30
        )
        # Promptly: not after the answer timeout (30 s) an agent would get.
        assert time.monotonic() - started < 10
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"]["code"] in ("NODE_OFFLINE", "NODE_UNAVAILABLE")
        status = httpx.get(f"{panel.base_url}/api/servers/{server_id}", headers=headers)
        assert status.json()["data"]["status"] == "stopped"

        wait_for(lambda: node_online(panel.base_url, headers), 30)
        assert [pid for pid in agent_pids(data) if pid != first], "a new agent runs"
        assert "up.agent_restarted" in panel.output()
