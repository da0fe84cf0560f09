"""The agent's SFTP server (``sftp_listen``): password logins, files only.

The username is a server's id and the password the user's access token or
API key; the panel decides (:mod:`hostplane.agent.sftp.authorizer`). After
that the session can only speak SFTP, confined to that server's folder with
that login's permissions (:mod:`hostplane.agent.sftp.handler`): shells,
commands, SCP, port and agent forwarding are all refused.

A port that cannot be bound is logged and the agent carries on without SFTP,
as it does without its peer listener.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from pathlib import Path

import asyncssh

from hostplane.agent.asks import Ask
from hostplane.agent.config import AgentSettings, split_host_port
from hostplane.agent.disk import DiskUsage
from hostplane.agent.files.confine import ServerRoot
from hostplane.agent.sftp.authorizer import SftpAuthorizer, SftpGrant
from hostplane.agent.sftp.handler import ConfinedSFTPServer
from hostplane.agent.sftp.hostkey import load_or_create_host_key
from hostplane.protocol import SftpActivity

logger = logging.getLogger(__name__)

GRANT_INFO = "hostplane_sftp_grant"
LOGIN_TIMEOUT = 30.0
KEEPALIVE_INTERVAL = 30.0


class _Login(asyncssh.SSHServer):
    """One client connection until it has logged in (and what it may ask after)."""

    def __init__(self, service: SftpService) -> None:
        self._service = service
        self._conn: asyncssh.SSHServerConnection | None = None

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._conn = conn
        self._service.connections.add(conn)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._conn is not None:
            self._service.connections.discard(self._conn)

    def begin_auth(self, username: str) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return True

    def public_key_auth_supported(self) -> bool:
        return False

    def kbdint_auth_supported(self) -> bool:
        return False

    def host_based_auth_supported(self) -> bool:
        return False

    async def validate_password(self, username: str, password: str) -> bool:
        conn = self._conn
        if conn is None:
            return False
        peer = conn.get_extra_info("peername")
        client_ip = str(peer[0]) if isinstance(peer, tuple) and peer else None
        grant = await self._service.authorizer.authorize(username, password, client_ip=client_ip)
        if grant is None:
            return False
        conn.set_extra_info(**{GRANT_INFO: grant})
        return True

    def server_requested(self, listen_host: str, listen_port: int) -> bool:
        return False

    def connection_requested(
        self, dest_host: str, dest_port: int, orig_host: str, orig_port: int
    ) -> bool:
        return False

    def unix_server_requested(self, listen_path: str) -> bool:
        return False

    def unix_connection_requested(self, dest_path: str) -> bool:
        return False


class SftpService:
    """The SFTP server of one agent. Disabled (``enabled`` false) without ``sftp_listen``."""

    def __init__(
        self,
        settings: AgentSettings,
        server_dir: Callable[[str], Path],
        ask: Ask,
        *,
        busy: Callable[[str], str | None] = lambda server_id: None,
        report: Callable[[SftpActivity], None] = lambda activity: None,
        disk: DiskUsage | None = None,
        file_owner: Callable[[str], tuple[int, int] | None] = lambda server_id: None,
    ) -> None:
        self.settings = settings
        self._file_owner = file_owner
        self._disk = disk
        self._busy = busy
        self._report = report
        self.authorizer = SftpAuthorizer(ask)
        self.connections: set[asyncssh.SSHServerConnection] = set()
        self._server_dir = server_dir
        self._acceptor: asyncssh.SSHAcceptor | None = None
        self.port: int | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.settings.sftp_listen)

    @property
    def host_key_path(self) -> Path:
        return Path(self.settings.data_dir) / "sftp" / "host_key"

    async def start(self) -> None:
        if not self.enabled or self._acceptor is not None:
            return
        listen = self.settings.sftp_listen
        host, port = split_host_port(listen)
        try:
            key = await asyncio.to_thread(load_or_create_host_key, self.host_key_path)
        except (OSError, asyncssh.KeyImportError) as exc:
            logger.error("SFTP server not started: its host key is unusable: %s", exc)
            return
        try:
            self._acceptor = await asyncssh.create_server(
                lambda: _Login(self),
                host or None,
                port,
                server_host_keys=[key],
                sftp_factory=self._session,
                sftp_version=6,
                allow_scp=False,
                agent_forwarding=False,
                x11_forwarding=False,
                login_timeout=LOGIN_TIMEOUT,
                keepalive_interval=KEEPALIVE_INTERVAL,
            )
        except OSError as exc:
            logger.error("SFTP server not started on %s: %s", listen, exc)
            return
        self.port = self._acceptor.get_port()
        logger.info("SFTP server on %s (port %s)", listen, self.port)

    def _session(self, chan: asyncssh.SSHServerChannel[bytes]) -> ConfinedSFTPServer:
        grant = chan.get_connection().get_extra_info(GRANT_INFO)
        if not isinstance(grant, SftpGrant):  # pragma: no cover - password auth is required
            raise asyncssh.DisconnectError(asyncssh.DISC_NO_MORE_AUTH_METHODS_AVAILABLE, "no login")
        server_id = grant.server_id
        return ConfinedSFTPServer(
            chan,
            ServerRoot(self._server_dir(server_id), owner=self._file_owner(server_id)),
            grant,
            busy=lambda: self._busy(server_id),
            disk=self._disk,
            activity=lambda action, path, size: self._report(
                SftpActivity(
                    server_id=server_id,
                    user_id=grant.user_id,
                    action=action,
                    path=path,
                    bytes=size,
                )
            ),
        )

    async def close(self) -> None:
        """Stop listening and end every session."""
        if self._acceptor is None:
            return
        self._acceptor.close()
        for conn in list(self.connections):
            conn.close()
        with contextlib.suppress(Exception):
            await self._acceptor.wait_closed()
        for conn in list(self.connections):
            with contextlib.suppress(Exception):
                await conn.wait_closed()
        self._acceptor = None
        self.port = None
