"""A real agent process, SIGKILLed and started again, against a test panel."""

from __future__ import annotations

import asyncio
import contextlib
import shlex
import signal
import sys
from pathlib import Path

from hostplane.protocol import ConsoleOutput, NodeHandshake, Reconcile, Response
from tests.agent.panel_stub import PanelStub, running_panel

AGENT = (
    "import sys\n"
    "from pathlib import Path\n"
    "from hostplane.agent.config import AgentSettings\n"
    "from hostplane.agent.main import run\n"
    "run(AgentSettings.load(Path(sys.argv[1])))\n"
)

TICKER = "import time\ni = 0\nwhile True:\n    print('tick', i, flush=True)\n    i += 1\n    time.sleep(0.02)"


async def start_agent(config: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(sys.executable, "-c", AGENT, str(config))


async def seqs_until(panel: PanelStub, seen: set[int], target: int) -> None:
    while max(seen, default=0) < target:
        out = await panel.expect(ConsoleOutput, server_id="game")
        assert out.seq is not None
        seen.update(range(out.seq, out.seq + len(out.lines())))


async def test_agent_killed_and_restarted_keeps_the_server_and_its_console(
    data_dir: Path,
) -> None:
    async with running_panel() as panel:
        config = data_dir / "agent.toml"
        config.write_text(
            f'panel_url = "{panel.url}"\nnode_id = "n1"\ntoken = "t"\n'
            f'data_dir = "{data_dir}"\nheartbeat_interval = 0.5\n'
        )
        agent = await start_agent(config)
        try:
            await panel.expect(NodeHandshake, within=15)
            assert (await panel.expect(Reconcile)).servers == []
            await panel.send(
                {
                    "type": "start_server",
                    "requestId": "r1",
                    "serverId": "game",
                    "serverUuid": "u",
                    "template": {"startCommand": f"/usr/bin/python3 -u -c {shlex.quote(TICKER)}"},
                }
            )
            pid = (await panel.expect(Response, request_id="r1")).data["pid"]
            seen: set[int] = set()
            await seqs_until(panel, seen, 10)
        finally:
            agent.send_signal(signal.SIGKILL)
            await agent.wait()

        panel.backlog.clear()
        await asyncio.sleep(0.3)
        agent = await start_agent(config)
        try:
            await panel.expect(NodeHandshake, within=15)
            reconcile = await panel.expect(Reconcile)
            [server] = reconcile.servers
            assert (server.server_id, server.state, server.pid) == ("game", "running", pid)
            assert server.last_seq is not None
            await seqs_until(panel, seen, server.last_seq + 10)
            # Whatever the panel saw before and after the agent's death: no gap.
            assert seen == set(range(1, max(seen) + 1))

            await panel.send({"type": "kill_server", "requestId": "r2", "serverId": "game"})
            killed = await panel.expect(Response, request_id="r2")
            assert killed.data == {"state": "stopped", "exitCode": 137}
            agent.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(agent.wait(), 10) == 0
        finally:
            with contextlib.suppress(ProcessLookupError):
                agent.kill()
            await agent.wait()
