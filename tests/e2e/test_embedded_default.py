"""Command 1 of the README: ``scripts/up.sh`` (``hostplane up``) on a fresh data folder."""

import re
import socket
import time
from pathlib import Path

import httpx

from tests.support.processes import base_env, free_port, hostplane_process, up_script_command


def ssh_banner(port: int) -> bytes:
    """The first line an SSH server sends, waiting for the agent to listen."""
    for _ in range(100):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
                return connection.recv(64)
        except OSError:
            time.sleep(0.2)
    return b""


def local_node_comes_online(base_url: str, token: str) -> bool:
    """``up`` registers this machine as a node and its agent dials in."""
    for _ in range(100):
        listed = httpx.get(
            f"{base_url}/api/nodes", headers={"Authorization": f"Bearer {token}"}
        ).json()["data"]
        if [node["name"] for node in listed] == ["local"] and listed[0]["isOnline"]:
            return True
        time.sleep(0.2)
    return False


def test_up_starts_the_panel_creates_one_admin_and_prints_how_to_log_in(tmp_path: Path) -> None:
    data = tmp_path / "data"
    port = free_port()
    env = base_env()  # no HOSTPLANE_* at all: exactly what a newcomer has

    with hostplane_process(
        ["up", "--data-dir", str(data), "--port", str(port)],
        port=port,
        log_path=tmp_path / "first.log",
        env=env,
        command=up_script_command("--data-dir", str(data), "--port", str(port)),
    ) as panel:
        assert httpx.get(f"{panel.base_url}/health").json() == {
            "status": "ok",
            "service": "hostplane-api",
        }
        status = httpx.get(f"{panel.base_url}/status").json()
        assert status["dependencies"]["database"] == "ok"
        first_output = panel.output()
        credentials = re.search(r"Log in as\s+(\S+) with password (\S+)", first_output)
        assert credentials, first_output
        token = httpx.post(
            f"{panel.base_url}/api/auth/login",
            json={"email": credentials.group(1), "password": credentials.group(2)},
        ).json()["data"]["token"]
        assert local_node_comes_online(panel.base_url, token), (data / "agent.log").read_text()
        headers = {"Authorization": f"Bearer {token}"}
        # The bundled templates are there: a first server is one request away.
        listed = httpx.get(f"{panel.base_url}/api/templates", headers=headers).json()["data"]
        assert {"Python Echo", "Python HTTP Server"} <= {template["name"] for template in listed}
        [node] = httpx.get(f"{panel.base_url}/api/nodes", headers=headers).json()["data"]
        assert node["cpuOverallocate"] == -1, "the local node does not limit CPU"
        # The local node serves SFTP (Flow 8) where the start-up lines say.
        sftp = re.search(r"SFTP\s+sftp://127\.0\.0\.1:(\d+)", first_output)
        assert sftp, first_output
        assert ssh_banner(int(sftp.group(1))).startswith(b"SSH-2.0-"), (
            data / "agent.log"
        ).read_text()
    match = re.search(r"Log in as\s+(\S+) with password (\S+)", first_output)
    assert match, first_output
    assert match.group(1) == "admin@hostplane.local"
    assert len(match.group(2)) >= 16
    assert f"http://127.0.0.1:{port}" in first_output

    config = data / "hostplane.toml"
    assert config.stat().st_mode & 0o777 == 0o600
    assert "secret_key" in config.read_text()
    assert (data / "hostplane.db").exists()

    with hostplane_process(
        ["up", "--data-dir", str(data), "--port", str(port)],
        port=port,
        log_path=tmp_path / "second.log",
        env=env,
    ) as panel:
        second_output = panel.output()
        assert local_node_comes_online(panel.base_url, token), (
            "same node, agent back with the kept secret"
        )
        # the in-process worker reports in, so the queue is served
        for _ in range(50):
            if httpx.get(f"{panel.base_url}/status").json()["dependencies"]["queue"] == "ok":
                break
        assert httpx.get(f"{panel.base_url}/status").json()["dependencies"]["queue"] == "ok"
    assert "with password" not in second_output
    assert match.group(2) not in second_output
    assert "admin@hostplane.local" in second_output
