"""How a server's command line is wrapped: plain, or under bubblewrap, and
never with root or a capability when the agent runs as root.

Bubblewrap runs as a child of the server's supervisor, so
``--die-with-parent`` ties the sandbox to the supervisor (which outlives
the agent), never to the agent. Flags, and why:

- ``--unshare-pid --unshare-ipc --unshare-uts --unshare-cgroup-try``: own
  pid namespace and friends. Not ``--unshare-all``: that includes the
  network namespace, and a game server must listen on the host's ports
  (``network="none"`` adds ``--unshare-net`` for servers that need none).
- no ``--new-session``: the server stays in the process group the
  supervisor created for bwrap, so SIGTERM/SIGKILL to that group reach it
  (bwrap forwards no signals). Its stdin is a pipe and it has no
  controlling terminal, so there is no terminal to inject input into.
- ``--ro-bind /usr`` with the usual ``/bin``, ``/lib``, ``/lib64`` symlinks,
  a few read-only files of ``/etc`` (TLS roots, resolver, alternatives),
  fresh ``/proc``, ``/dev`` and ``/tmp``; the server's data folder is the
  only writable bind, mounted at ``/data`` (also the working directory and
  ``HOME``). ``--clearenv`` then only the server's environment.

Privileges. A bwrap started by root keeps every capability inside, and
``--uid`` in a user namespace it creates still maps to host root. So, as
root, the outer bwrap only builds the mounts and namespaces; inside it
``setpriv`` switches to the server's own host uid/gid, clears supplementary
groups, the inheritable, ambient and bounding capability sets, and sets
``no_new_privs``; then, where user namespaces are available, an inner
unprivileged bwrap puts the server in its own user namespace with
``--cap-drop ALL --disable-userns`` (no capability in it, and no further
user namespaces: a large kernel attack surface closed). An agent that is
not root runs a single bwrap with ``--unshare-user --disable-userns
--cap-drop ALL``. Without the sandbox (an explicit opt-out) a root agent
still starts the server through ``setpriv`` as its uid.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from hostplane.agent.isolation import Identity, is_root, setpriv_path

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
class CommandLine:
    argv: list[str]
    cwd: str
    env: dict[str, str]
    sandbox: str
    """``bubblewrap`` or ``none``."""


class SandboxError(Exception):
    """The sandbox asked for cannot be built on this machine."""


def bwrap_path() -> str | None:
    return shutil.which("bwrap")


def drop_privileges(identity: Identity) -> list[str]:
    """``setpriv`` switching to ``identity`` with no capability and ``no_new_privs``."""
    setpriv = setpriv_path()
    if setpriv is None:
        raise SandboxError("setpriv (util-linux) is not installed")
    return [
        setpriv,
        f"--reuid={identity.uid}",
        f"--regid={identity.gid}",
        "--clear-groups",
        "--inh-caps=-all",
        "--ambient-caps=-all",
        "--bounding-set=-all",
        "--no-new-privs",
        "--",
    ]


@functools.cache
def _can_disable_userns(bwrap: str) -> bool:
    """bubblewrap 0.8 added ``--disable-userns``; older ones refuse the flag."""
    try:
        shown = subprocess.run(  # noqa: S603 - bwrap's own help text
            [bwrap, "--help"], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "--disable-userns" in shown.stdout + shown.stderr


def _own_user_namespace(bwrap: str) -> list[str]:
    nested = ["--disable-userns"] if _can_disable_userns(bwrap) else []
    return [bwrap, "--unshare-user", *nested, "--cap-drop", "ALL"]


def build_launch(
    command: str,
    *,
    data_dir: Path,
    env: dict[str, str],
    sandbox: bool,
    run_as: Identity | None = None,
    user_namespace: bool = True,
    network: str = "host",
) -> CommandLine:
    """The argv, cwd and environment that run ``command`` (a shell command line).

    ``run_as`` (required when the agent is root, refused otherwise) is the
    host uid/gid the server runs as. ``user_namespace`` puts the sandboxed
    server in its own user namespace (needs unprivileged user namespaces).
    """
    if is_root() and run_as is None:
        raise SandboxError("a server never runs as root: give it a uid")
    if run_as is not None and not is_root():
        raise SandboxError("only root can run a server as another uid")
    shell = ["/bin/sh", "-c", f"exec {command}"]
    bwrap = bwrap_path() if sandbox else None
    if bwrap is None:
        full_env = {"PATH": DEFAULT_PATH, "HOME": str(data_dir), **env}
        prefix = drop_privileges(run_as) if run_as is not None else []
        return CommandLine(argv=[*prefix, *shell], cwd=str(data_dir), env=full_env, sandbox="none")
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
    if network == "none":
        argv.append("--unshare-net")
    if run_as is None:
        if not user_namespace:
            raise SandboxError("an unprivileged bubblewrap needs user namespaces")
        # Unprivileged: the user namespace is the outer bwrap's own.
        argv[1:1] = _own_user_namespace(bwrap)[1:]
    for path in _ETC_READONLY:
        argv += ["--ro-bind-try", path, path]
    argv += ["--bind", str(data_dir), "/data", "--chdir", "/data", "--clearenv"]
    for key, value in {"PATH": DEFAULT_PATH, "HOME": "/data", **env}.items():
        argv += ["--setenv", key, value]
    argv.append("--")
    if run_as is not None:
        argv += drop_privileges(run_as)
        if user_namespace:
            argv += [
                *_own_user_namespace(bwrap),
                "--die-with-parent",
                "--dev-bind", "/", "/",
                "--chdir", "/data",
                "--",
            ]  # fmt: skip
    argv += shell
    return CommandLine(
        argv=argv, cwd=str(data_dir), env={"PATH": DEFAULT_PATH}, sandbox="bubblewrap"
    )
