"""SFTP throughput: the agent's SFTP server against OpenSSH's, same client, same run.

Starts a panel (``hostplane serve``, SQLite) and an agent (``hostplane agent``
with ``sftp_listen``) as separate processes, creates and installs a server, and
times a put and a get of one ``--size-mb`` file (1 GiB by default) with
OpenSSH's own ``sftp`` client, logging in with the server's id and the owner's
access token (permission checks and confinement on). In the same run it times
the same put and get against OpenSSH's ``sshd`` serving ``sftp-server`` on a
folder of the same file system (public-key login). Both use the same cipher.
Prints MB/s, the median of ``--runs``, and the ratios.

Needs Debian's ``openssh-server`` (``sshd``, ``sftp-server``) and ``openssh-client``.

    .venv/bin/python bench/sftp_throughput.py [--size-mb 1024] [--runs 3]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
from _harness import PASSWORD, SECRET, clean_env, free_port, hostplane, process, wait_health

CIPHER = "aes128-gcm@openssh.com"
SFTP_SERVER = next(
    (
        p
        for p in ("/usr/lib/openssh/sftp-server", "/usr/libexec/openssh/sftp-server")
        if Path(p).exists()
    ),
    "internal-sftp",
)
COMMON = ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-c", CIPHER]


def make_file(path: Path, size_mb: int) -> None:
    block = os.urandom(8 << 20)
    with path.open("wb") as out:
        for _ in range(size_mb // 8):
            out.write(block)
        out.write(block[: (size_mb % 8) << 20])


def timed(args: list[str], commands: str, env: dict[str, str] | None = None) -> float:
    started = time.perf_counter()
    done = subprocess.run(
        args, input=commands, text=True, capture_output=True, env=env, check=False
    )
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return elapsed


@contextlib.contextmanager
def hostplane_sftp(folder: Path) -> Iterator[tuple[int, str, str]]:
    """A panel and an agent serving SFTP: (port, username, password)."""
    env = clean_env(
        HOSTPLANE_SECRET_KEY=SECRET,
        HOSTPLANE_DATABASE_URL=f"sqlite:///{folder / 'panel.db'}",
        HOSTPLANE_RATE_LIMITS__ENABLED="false",
        HOSTPLANE_LOG_LEVEL="warning",
    )
    subprocess.run(
        hostplane("migrate", "--data-dir", str(folder)), env=env, check=True, capture_output=True
    )
    subprocess.run(
        hostplane("admin", "create", "--data-dir", str(folder), "--email", "ops@example.com",
                  "--password", PASSWORD, "--role", "owner"),
        env=env, check=True, capture_output=True,
    )  # fmt: skip
    port = free_port()
    log = folder / "serve.log"
    with process(
        hostplane("serve", "--data-dir", str(folder), "--port", str(port)), env, log
    ) as panel:
        base = f"http://127.0.0.1:{port}"
        wait_health(base, panel, log)
        token = httpx.post(
            f"{base}/api/auth/login", json={"email": "ops@example.com", "password": PASSWORD}
        ).json()["data"]["token"]
        http = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=60)
        node = http.post(
            "/api/nodes",
            json={"name": "bench", "hostname": "127.0.0.1", "publicAddress": "127.0.0.1",
                  "maxMemoryMb": 8192, "maxCpuCores": 8, "maxDiskMb": 1 << 20},
        ).json()["data"]  # fmt: skip
        template = http.post(
            "/api/templates",
            json={"name": "files", "dockerImage": "localhost/none", "startCommand": "sleep 3600",
                  "installScript": "#!/bin/sh\ntrue\n"},
        )  # fmt: skip
        assert template.status_code == 201, template.text
        sftp_port = free_port()
        agent_env = clean_env(
            HOSTPLANE_AGENT__PANEL_URL=f"ws://127.0.0.1:{port}/ws",
            HOSTPLANE_AGENT__NODE_ID=node["id"],
            HOSTPLANE_AGENT__TOKEN=node["secret"],
            HOSTPLANE_AGENT__DATA_DIR=str(folder / "agent"),
            HOSTPLANE_AGENT__SFTP_LISTEN=f"127.0.0.1:{sftp_port}",
        )
        with process(
            hostplane("agent", "--data-dir", str(folder / "agent")), agent_env, folder / "agent.log"
        ):
            deadline = time.monotonic() + 60
            while not http.get(f"/api/nodes/{node['id']}").json()["data"]["isOnline"]:
                if time.monotonic() > deadline:
                    raise TimeoutError((folder / "agent.log").read_text())
                time.sleep(0.2)
            server = http.post(
                "/api/servers",
                json={"name": "files", "templateId": template.json()["data"]["id"], "nodeId": node["id"],
                      "allocatedMemoryMb": 128, "allocatedCpuCores": 1, "allocatedDiskMb": 1 << 16},
            )  # fmt: skip
            assert server.status_code == 201, server.text
            server_id = server.json()["data"]["id"]
            http.post(f"/api/servers/{server_id}/install")
            while http.get(f"/api/servers/{server_id}").json()["data"]["status"] != "stopped":
                if time.monotonic() > deadline + 60:
                    raise TimeoutError("the bench server did not install")
                time.sleep(0.2)
            yield sftp_port, server_id, token


@contextlib.contextmanager
def openssh_sftp(folder: Path) -> Iterator[tuple[int, Path]]:
    """``sshd`` on a free port serving ``sftp-server``: (port, client key)."""
    sshd = shutil.which("sshd") or "/usr/sbin/sshd"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(folder / "host")], check=True
    )
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(folder / "client")], check=True
    )
    shutil.copy(folder / "client.pub", folder / "authorized_keys")
    Path("/run/sshd").mkdir(exist_ok=True)
    port = free_port()
    config = folder / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {folder / 'host'}\n"
        f"PidFile {folder / 'sshd.pid'}\nAuthorizedKeysFile {folder / 'authorized_keys'}\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
        f"PermitRootLogin yes\nSubsystem sftp {SFTP_SERVER}\n"
    )
    with process([sshd, "-D", "-e", "-f", str(config)], dict(os.environ), folder / "sshd.log"):
        deadline = time.monotonic() + 10
        while True:
            probe = subprocess.run(
                ["ssh", "-i", str(folder / "client"), "-p", str(port), *COMMON, "-o", "BatchMode=yes",
                 "root@127.0.0.1", "true"],
                capture_output=True, check=False,
            )  # fmt: skip
            if probe.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        yield port, folder / "client"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    if shutil.which("sshd") is None and not Path("/usr/sbin/sshd").exists():
        raise SystemExit("sshd is needed: apt-get install -y openssh-server")
    with tempfile.TemporaryDirectory(
        prefix="hostplane-sftp-", dir=os.environ.get("BENCH_DIR")
    ) as tmp:
        folder = Path(tmp)
        source = folder / "source.bin"
        make_file(source, args.size_mb)
        askpass = folder / "askpass.sh"
        tree = folder / "openssh-tree"
        tree.mkdir()
        results: dict[str, list[float]] = {
            "agent put": [],
            "agent get": [],
            "openssh put": [],
            "openssh get": [],
        }
        with (
            hostplane_sftp(folder) as (port, username, token),
            openssh_sftp(folder) as (ssh_port, key),
        ):
            askpass.write_text(f"#!/bin/sh\necho '{token}'\n")
            askpass.chmod(0o700)
            agent_env = dict(
                os.environ, SSH_ASKPASS=str(askpass), SSH_ASKPASS_REQUIRE="force", DISPLAY=":0"
            )
            agent_cmd = ["sftp", "-P", str(port), *COMMON, "-o", "PubkeyAuthentication=no",
                         f"{username}@127.0.0.1"]  # fmt: skip
            ssh_cmd = [
                "sftp",
                "-i",
                str(key),
                "-P",
                str(ssh_port),
                *COMMON,
                "-b",
                "-",
                "root@127.0.0.1",
            ]
            for _ in range(args.runs):
                for label, command, env, remote in (
                    ("agent", agent_cmd, agent_env, "bench.bin"),
                    ("openssh", ssh_cmd, None, str(tree / "bench.bin")),
                ):
                    results[f"{label} put"].append(timed(command, f"put {source} {remote}\n", env))
                    target = folder / f"{label}-copy.bin"
                    results[f"{label} get"].append(timed(command, f"get {remote} {target}\n", env))
                    assert target.stat().st_size == source.stat().st_size
                    target.unlink()
        mb = args.size_mb * 1.048576
        rates = {label: mb / statistics.median(times) for label, times in results.items()}
        print(f"{args.size_mb} MiB, {args.runs} runs, cipher {CIPHER}, sftp-server: {SFTP_SERVER}")
        for way in ("put", "get"):
            agent, openssh = rates[f"agent {way}"], rates[f"openssh {way}"]
            print(
                f"{way}: agent {agent:7.1f} MB/s   OpenSSH {openssh:7.1f} MB/s   ratio {agent / openssh:.2f}x"
            )


if __name__ == "__main__":
    main()
