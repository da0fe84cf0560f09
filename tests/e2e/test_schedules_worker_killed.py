"""A scheduled task's run whose worker is killed (SIGKILL) between two steps of its
chain, with the panel and the workers as separate processes: once the job's lease
expires, another worker finishes the chain without repeating the step already done."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

from tests.e2e.panel import live_panel
from tests.e2e.test_transfer_worker_killed import start_worker, wait_for
from tests.support.processes import stop_process

TEMPLATES = Path(__file__).resolve().parents[2] / "src" / "hostplane" / "templates"
STEP_DELAY = 8


async def test_a_worker_killed_mid_chain_repeats_no_step_and_the_run_ends(
    tmp_path: Path,
) -> None:
    async with live_panel(tmp_path) as live:
        http = live.http
        workers: list[subprocess.Popen[bytes]] = []
        try:
            node = await live.add_node("sched")
            template_body = json.loads((TEMPLATES / "python-echo.json").read_text())
            template = (await http.post("/api/templates", json=template_body)).json()["data"]
            created = await http.post(
                "/api/servers",
                json={
                    "name": "scheduled",
                    "templateId": template["id"],
                    "nodeId": node["id"],
                    "allocatedMemoryMb": 128,
                    "allocatedCpuCores": 1,
                    "allocatedDiskMb": 100,
                },
            )
            assert created.status_code == 201, created.text
            server_id = created.json()["data"]["id"]

            worker_env = {
                **live.env,
                "HOSTPLANE_JOBS__LEASE_SECONDS": "3",
                "HOSTPLANE_SCHEDULES__TICK_SECONDS": "1",
            }
            workers.append(start_worker(tmp_path, worker_env, "worker-1.log"))
            task = await http.post(
                "/api/tasks",
                json={
                    "serverId": server_id,
                    "name": "Two backups",
                    "action": "backup",
                    "payload": {"name": "before"},
                    "schedule": "0 0 1 1 *",
                    "steps": [
                        {
                            "action": "backup",
                            "payload": {"name": "after"},
                            "delaySeconds": STEP_DELAY,
                        }
                    ],
                },
            )
            assert task.status_code == 201, task.text
            task_id = task.json()["data"]["id"]
            executed = (await http.post(f"/api/tasks/{task_id}/execute")).json()["data"]
            runs = f"/api/tasks/{task_id}/runs"

            def first_step_done(found: list[dict[str, Any]]) -> bool:
                return bool(found) and found[0]["steps"][0]["status"] == "succeeded"

            await wait_for(http, runs, first_step_done, seconds=30, every=0.1)
            # Killed while the chain waits for its second step.
            os.killpg(workers[0].pid, signal.SIGKILL)
            workers[0].wait()

            workers.append(start_worker(tmp_path, worker_env, "worker-2.log"))
            found = await wait_for(
                http,
                runs,
                lambda r: r[0]["status"] not in ("queued", "running"),
                seconds=60,
                every=0.25,
            )
            run = found[0]
            assert run["id"] == executed["runId"]
            assert run["status"] == "succeeded", run
            assert [s["status"] for s in run["steps"]] == ["succeeded", "succeeded"]
            job = (await http.get(f"/api/jobs/{executed['jobId']}")).json()["data"]
            assert job["status"] == "succeeded", job
            assert job["attempts"] == 2, job
            # Each step acted once: one backup of each name.
            backups = (await http.get(f"/api/servers/{server_id}/backups")).json()["data"]
            assert sorted(b["name"] for b in backups) == ["after", "before"]
        finally:
            for process in workers:
                stop_process(process)
