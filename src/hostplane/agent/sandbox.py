"""How a server's command line is wrapped: plain, or under bubblewrap.

Bubblewrap runs as a child of the server's supervisor, so
``--die-with-parent`` ties the sandbox to the supervisor (which outlives
the agent), never to the agent. Flags, and why:

- ``--unshare-pid --unshare-ipc --unshare-uts --unshare-cgroup-try``: own
  pid namespace and friends. Not ``--unshare-all``: that includes the
  network namespace, and a game server must listen on the host's ports.
- no ``--new-session``: the server stays in the process group the
  supervisor created for bwrap, so SIGTERM/SIGKILL to that group reach it
  (bwrap forwards no signals). Its stdin is a pipe and it has no
  controlling terminal, so there is no terminal to inject input into.
- ``--ro-bind /usr`` with the usual ``/bin``, ``/lib``, ``/lib64`` symlinks,
  a few read-only files of ``/etc`` (TLS roots, resolver, alternatives),
  fresh ``/proc``, ``/dev`` and ``/tmp``; the server's data folder is the
  only writable bind, mounted at ``/data`` (also the working directory and
  ``HOME``). ``--clearenv`` then only the server's environment.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
_ETC_READONLY = (
    "/etc/resolv.conf",
    "/etc/hosts",
    "/etc/nsswitch.conf",
    "/etc/ssl",
    "/etc/ca-certificates",
    "/etc/alternatives",
    "/etc/localtime",
    "/etc/passwd",
    "/etc/group",
)


@dataclass(frozen=True)
class LaunchSpec:
    argv: list[str]
    cwd: str
    env: dict[str, str]
    sandbox: str
    """``bubblewrap`` or ``none``."""


def bwrap_path() -> str | None:
    return shutil.which("bwrap")


def build_launch(command: str, *, data_dir: Path, env: dict[str, str], sandbox: bool) -> LaunchSpec:
    """The argv, cwd and environment that run ``command`` (a shell command line)."""
    shell = ["/bin/sh", "-c", f"exec {command}"]
    bwrap = bwrap_path() if sandbox else None
    if bwrap is None:
        full_env = {"PATH": DEFAULT_PATH, "HOME": str(data_dir), **env}
        return LaunchSpec(argv=shell, cwd=str(data_dir), env=full_env, sandbox="none")
    argv = [
        bwrap,
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
        "--die-with-parent",
        "--ro-bind", "/usr", "/usr",
        "--symlink", "usr/bin", "/bin",
        "--symlink", "usr/sbin", "/sbin",
        "--symlink", "usr/lib", "/lib",
        "--symlink", "usr/lib64", "/lib64",
        "--proc", "/proc",
        "--dev", "/dev",
        "--tmpfs", "/tmp",  # noqa: S108 - a private tmpfs inside the sandbox
    ]  # fmt: skip
    for path in _ETC_READONLY:
        argv += ["--ro-bind-try", path, path]
    argv += ["--bind", str(data_dir), "/data", "--chdir", "/data", "--clearenv"]
    for key, value in {"PATH": DEFAULT_PATH, "HOME": "/data", **env}.items():
        argv += ["--setenv", key, value]
    argv += ["--", *shell]
    return LaunchSpec(
        argv=argv, cwd=str(data_dir), env={"PATH": DEFAULT_PATH}, sandbox="bubblewrap"
    )
