"""The process runtime and its supervisors, with real processes."""

from __future__ import annotations

import asyncio
import os
import shlex
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from hostplane.agent.runtime import (
    InstallFailed,
    LinesLost,
    OutputBatch,
    ProcessRuntime,
    RuntimeEvent,
    ServerAlreadyRunning,
    ServerNotRunning,
    StateChange,
)
from tests.agent.conftest import collect_until

ECHO = """
import sys
print("ready", flush=True)
for line in sys.stdin:
    line = line.strip()
    if line == "quit":
        print("bye", flush=True)
        sys.exit(0)
    print("echo", line, flush=True)
"""

STUBBORN = """
import signal, sys, time
signal.signal(signal.SIGTERM, lambda *a: print("ignoring TERM", flush=True))
print("ready", flush=True)
while True:
    time.sleep(0.05)
"""

TICKER = """
import sys, time
i = 0
while True:
    print("tick", i, flush=True)
    i += 1
    time.sleep(0.02)
"""


SYSTEM_PYTHON = "/usr/bin/python3"
"""What servers run: their uid cannot reach a Python installed under /root."""


def cmd(python: str, code: str) -> str:
    return f"{python} -u -c {shlex.quote(textwrap.dedent(code))}"


def lines_of(events: list[RuntimeEvent]) -> list[tuple[int, str]]:
    out = []
    for event in events:
        if isinstance(event, OutputBatch) and event.seq is not None:
            out.extend((event.seq + i, line) for i, line in enumerate(event.lines))
    return out


def has_line(text: str) -> object:
    return lambda events: any(line == text for _, line in lines_of(events))


def has_state(*states: str) -> object:
    return lambda events: any(isinstance(e, StateChange) and e.state in states for e in events)


async def test_echo_server_input_and_sequenced_output(runtime: ProcessRuntime, python: str) -> None:
    status = await runtime.start("echo", cmd(python, ECHO), stop_command="quit")
    assert status.state == "running"
    assert status.pid is not None
    assert status.sandbox == ("bubblewrap" if runtime.sandbox else "none")

    await runtime.send_input("echo", "hello\n")
    await runtime.send_input("echo", "world\n")
    events = await collect_until(runtime, has_line("echo world"))
    lines = lines_of(events)
    assert [text for _, text in lines] == ["ready", "echo hello", "echo world"]
    seqs = [seq for seq, _ in lines]
    assert seqs == list(range(seqs[0], seqs[0] + 3))

    with pytest.raises(ServerAlreadyRunning):
        await runtime.start("echo", cmd(python, ECHO))

    final = await runtime.stop("echo", stop_timeout=5, term_timeout=1)
    assert final.state == "stopped"
    assert final.exit_code == 0
    events = await collect_until(runtime, has_state("stopped"))
    assert "bye" in [text for _, text in lines_of(events)]
    with pytest.raises(ServerNotRunning):
        await runtime.send_input("echo", "late\n")


async def test_stop_escalates_to_sigterm_then_sigkill(runtime: ProcessRuntime, python: str) -> None:
    await runtime.start("stubborn", cmd(python, STUBBORN), stop_command="quit")
    await collect_until(runtime, has_line("ready"))
    loop = asyncio.get_running_loop()
    began = loop.time()
    final = await runtime.stop("stubborn", stop_timeout=0.5, term_timeout=0.5)
    elapsed = loop.time() - began
    assert final.state == "stopped"
    assert final.exit_code == 128 + signal.SIGKILL
    assert 0.9 < elapsed < 5
    events = await collect_until(runtime, has_state("stopped"))
    assert "ignoring TERM" in [text for _, text in lines_of(events)]
    assert any(isinstance(e, StateChange) and e.state == "stopping" for e in events)


async def test_stop_without_stop_command_uses_sigterm(runtime: ProcessRuntime, python: str) -> None:
    await runtime.start("ticker", cmd(python, TICKER))
    final = await runtime.stop("ticker", stop_timeout=5, term_timeout=5)
    assert final.state == "stopped"
    assert final.exit_code == 128 + signal.SIGTERM


async def test_kill(runtime: ProcessRuntime, python: str) -> None:
    await runtime.start("victim", cmd(python, STUBBORN))
    final = await runtime.kill("victim")
    assert (final.state, final.exit_code) == ("stopped", 137)


async def test_crash_is_detected_with_exit_code(runtime: ProcessRuntime, python: str) -> None:
    code = 'print("about to fail", flush=True)\nraise SystemExit(3)'
    await runtime.start("crashy", cmd(python, code))
    events = await collect_until(runtime, has_state("crashed"))
    crash = next(e for e in events if isinstance(e, StateChange) and e.state == "crashed")
    assert crash.exit_code == 3
    assert "about to fail" in [text for _, text in lines_of(events)]
    status = await runtime.status("crashy")
    assert (status.state, status.exit_code) == ("crashed", 3)


async def test_runtime_discarded_server_keeps_running_and_reattaches(
    data_dir: Path, sandbox: bool, python: str
) -> None:
    first = ProcessRuntime(data_dir, sandbox=sandbox)
    started = await first.start("game", cmd(python, TICKER))
    events = await collect_until(first, lambda ev: len(lines_of(ev)) >= 5)
    last_seen = lines_of(events)[-1][0]
    await first.close()
    del first

    await asyncio.sleep(0.3)  # output keeps coming while nobody is attached
    second = ProcessRuntime(data_dir, sandbox=sandbox)
    status = await second.status("game")
    assert status.running
    assert status.pid == started.pid
    assert status.last_seq > last_seen
    await second.attach("game", from_seq=last_seen + 1)
    events = await collect_until(second, lambda ev: len(lines_of(ev)) >= 30)
    seqs = [seq for seq, _ in lines_of(events)]
    assert seqs == list(range(last_seen + 1, last_seen + 1 + len(seqs)))
    assert not any(isinstance(e, LinesLost) for e in events)
    await second.kill("game")
    await second.close()


AGENT_SCRIPT = """
import asyncio, sys
from pathlib import Path
from hostplane.agent.runtime import ProcessRuntime, OutputBatch

async def main():
    rt = ProcessRuntime(Path(sys.argv[1]), sandbox=sys.argv[2] == "1")
    status = await rt.start("game", sys.argv[3])
    last = 0
    while last < 10:
        event = await rt.next_event(10)
        if isinstance(event, OutputBatch):
            last = event.seq + len(event.lines) - 1
    print(status.pid, last, flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


async def test_agent_sigkilled_server_survives_and_new_runtime_reattaches(
    data_dir: Path, sandbox: bool, python: str
) -> None:
    agent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            AGENT_SCRIPT,
            str(data_dir),
            "1" if sandbox else "0",
            cmd(python, TICKER),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert agent.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(agent.stdout.readline), 20)
        pid_text, last_text = line.split()
        server_pid, agent_last_seq = int(pid_text), int(last_text)
    finally:
        agent.kill()
        agent.wait(5)

    await asyncio.sleep(0.2)
    os.kill(server_pid, 0)  # still alive after the agent was SIGKILLed
    runtime = ProcessRuntime(data_dir, sandbox=sandbox)
    try:
        statuses = await runtime.reattach()
        assert [(s.server_id, s.state, s.pid) for s in statuses] == [
            ("game", "running", server_pid)
        ]
        # The default replays everything retained: nothing the dead agent saw is missing
        # and the stream goes on without a gap.
        events = await collect_until(
            runtime,
            lambda ev: bool(lines_of(ev)) and lines_of(ev)[-1][0] > statuses[0].last_seq + 10,
        )
        seqs = [seq for seq, _ in lines_of(events)]
        assert seqs[0] == 1
        assert seqs == list(range(1, len(seqs) + 1))
        assert seqs[-1] > agent_last_seq
        assert runtime.last_seq("game") == seqs[-1]
    finally:
        await runtime.kill("game")
        await runtime.close()


async def test_exit_while_detached_is_reported_on_reattach(
    data_dir: Path, sandbox: bool, python: str
) -> None:
    first = ProcessRuntime(data_dir, sandbox=sandbox)
    code = "import sys, time\ntime.sleep(0.3)\nsys.exit(5)"
    await first.start("short", cmd(python, code))
    await first.close()
    await asyncio.sleep(1.0)

    second = ProcessRuntime(data_dir, sandbox=sandbox)
    statuses = await second.reattach()
    assert [(s.state, s.exit_code) for s in statuses] == [("crashed", 5)]
    events = await collect_until(second, has_state("crashed"), within=2)
    assert any(isinstance(e, StateChange) and e.exit_code == 5 for e in events)
    # Reported once: a third runtime does not announce it again.
    third = ProcessRuntime(data_dir, sandbox=sandbox)
    await third.reattach()
    with pytest.raises(TimeoutError):
        await third.next_event(0.3)


async def test_sequence_numbers_continue_across_runs(runtime: ProcessRuntime, python: str) -> None:
    await runtime.start("again", cmd(python, 'print("one")\nprint("two")'))
    first = await collect_until(runtime, has_state("stopped"))
    await runtime.start("again", cmd(python, 'print("three")'))
    second = await collect_until(runtime, has_state("stopped"))
    assert [seq for seq, _ in lines_of(first)] == [1, 2]
    assert lines_of(second) == [(3, "three")]


async def test_restart_uses_the_last_start(runtime: ProcessRuntime, python: str) -> None:
    first = await runtime.start("rs", cmd(python, STUBBORN), stop_command="quit")
    second = await runtime.restart("rs", stop_timeout=0.2, term_timeout=0.2)
    assert second.running
    assert second.pid != first.pid
    await runtime.kill("rs")


async def test_install_streams_output(runtime: ProcessRuntime) -> None:
    script = 'echo "installing $GAME"\necho to-stderr >&2\necho data > server.jar\n'
    lines: list[str] = []
    async for batch in runtime.install("inst", script, env={"GAME": "mc"}):
        assert batch.seq is None
        lines.extend(batch.lines)
    assert lines == ["installing mc", "to-stderr"]
    assert (runtime.server_dir("inst") / "server.jar").read_text() == "data\n"

    with pytest.raises(InstallFailed) as failure:
        async for _ in runtime.install("inst", "echo nope\nexit 7\n"):
            pass
    assert failure.value.exit_code == 7


async def test_stats_of_a_busy_process(runtime: ProcessRuntime, python: str) -> None:
    busy = "x = bytearray(64 * 1024 * 1024)\nwhile True:\n    pass"
    await runtime.start("busy", cmd(python, busy))
    await asyncio.sleep(0.3)
    stats = await runtime.stats("busy")
    assert stats.cpu_percent > 20
    assert stats.memory_mb > 50
    assert stats.processes >= 1
    await runtime.kill("busy")


async def test_long_data_folder_paths_work(long_data_dir: Path) -> None:
    runtime = ProcessRuntime(long_data_dir)
    assert len(str(runtime.run_dir("s" * 30) / "supervisor.sock")) > 107
    await runtime.start("s" * 30, cmd(SYSTEM_PYTHON, ECHO))
    await runtime.send_input("s" * 30, "hi\n")
    await collect_until(runtime, has_line("echo hi"))
    await runtime.kill("s" * 30)
    await runtime.close()


async def test_invalid_server_id_is_refused(runtime: ProcessRuntime) -> None:
    with pytest.raises(Exception, match="invalid server id"):
        await runtime.start("../etc", "true")


async def test_a_flood_of_output_arrives_complete_and_in_order(data_dir: Path) -> None:
    runtime = ProcessRuntime(data_dir)
    flood = "import sys\nfor i in range(100000):\n    print(i)"
    await runtime.start("flood", cmd(SYSTEM_PYTHON, flood))
    events = await collect_until(runtime, has_state("stopped"), within=30)
    # Every line is delivered in order, or accounted for by a LinesLost notice
    # when the producer outran the ring buffer (20 000 lines) - never silently.
    covered: list[int] = []
    for event in events:
        if isinstance(event, OutputBatch):
            assert event.seq is not None
            for i, text in enumerate(event.lines):
                assert text == str(event.seq + i - 1)
                covered.append(event.seq + i)
        elif isinstance(event, LinesLost):
            covered.extend(range(event.seq, event.seq + event.count))
    assert covered == list(range(1, 100_001))
    delivered = sum(len(e.lines) for e in events if isinstance(e, OutputBatch))
    assert delivered >= 20_000
    assert len([e for e in events if isinstance(e, OutputBatch)]) < delivered / 10
    await runtime.close()


async def test_sigterm_to_the_supervisor_stops_the_server_gracefully(
    runtime: ProcessRuntime, python: str
) -> None:
    status = await runtime.start("graceful", cmd(python, ECHO), stop_command="quit")
    assert status.supervisor_pid is not None
    os.kill(status.supervisor_pid, signal.SIGTERM)
    events = await collect_until(runtime, has_state("stopped"))
    assert "bye" in [text for _, text in lines_of(events)]
    final = next(e for e in events if isinstance(e, StateChange) and e.state == "stopped")
    assert final.exit_code == 0
