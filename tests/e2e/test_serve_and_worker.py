"""Production shape: ``migrate``, ``serve`` and ``worker`` as separate processes on one database."""

import subprocess
import time
from pathlib import Path

import httpx

from tests.conftest import POSTGRES_URL, TEST_SECRET
from tests.support.databases import empty_database
from tests.support.processes import (
    base_env,
    free_port,
    hostplane_command,
    hostplane_process,
    stop_process,
)


async def test_serve_and_worker_share_the_database(tmp_path: Path) -> None:
    async with empty_database(POSTGRES_URL, tmp_path) as url:
        env = base_env(
            HOSTPLANE_SECRET_KEY=TEST_SECRET,
            HOSTPLANE_DATABASE_URL=url,
            HOSTPLANE_LOG_FORMAT="json",
        )
        migrate = subprocess.run(
            hostplane_command("migrate", "--data-dir", str(tmp_path)),
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        assert migrate.returncode == 0, migrate.stderr
        port = free_port()
        with hostplane_process(
            ["serve", "--data-dir", str(tmp_path), "--port", str(port)],
            port=port,
            log_path=tmp_path / "serve.log",
            env=env,
        ) as panel:
            async with httpx.AsyncClient(base_url=panel.base_url) as http:
                assert (await http.get("/status")).json()["dependencies"] == {
                    "database": "ok",
                    "queue": "down",
                }
                with (tmp_path / "worker.log").open("wb") as log:
                    worker = subprocess.Popen(
                        hostplane_command("worker", "--data-dir", str(tmp_path)),
                        env=env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                try:
                    deadline = time.monotonic() + 30
                    queue = "down"
                    while time.monotonic() < deadline and queue != "ok":
                        queue = (await http.get("/status")).json()["dependencies"]["queue"]
                    assert queue == "ok", (tmp_path / "worker.log").read_text()
                finally:
                    assert stop_process(worker) == 0, (tmp_path / "worker.log").read_text()
            assert '"event": "http.request"' in panel.output(), "production logs are JSON"
