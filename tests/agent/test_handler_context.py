"""A server whose files are being restored or exported cannot be started meanwhile."""

from __future__ import annotations

from pathlib import Path

import pytest

from hostplane.agent.config import AgentSettings
from hostplane.agent.handlers.context import HandlerContext, ServerBusy
from hostplane.agent.peers import PeerListener
from hostplane.agent.streams import StreamHub
from hostplane.protocol import WireModel


async def _discard(message: WireModel | bytes) -> None:
    del message


async def _never_running(server_id: str) -> bool:
    del server_id
    return False


def test_an_exclusive_operation_holds_the_server_until_it_ends(tmp_path: Path) -> None:
    settings = AgentSettings(data_dir=tmp_path)
    context = HandlerContext(
        settings=settings,
        streams=StreamHub(_discard, _discard),
        send=_discard,
        server_dir=lambda server_id: tmp_path / server_id,
        is_running=_never_running,
        peers=PeerListener(settings),
    )
    context.ensure_idle("a")
    with context.exclusive("a", "restoring a backup"):
        with pytest.raises(ServerBusy, match="restoring a backup"):
            context.ensure_idle("a")
        with pytest.raises(ServerBusy), context.exclusive("a", "being copied"):
            pass
        context.ensure_idle("b")
    context.ensure_idle("a")
    with pytest.raises(RuntimeError), context.exclusive("a", "restoring"):
        raise RuntimeError("the restore failed")
    context.ensure_idle("a")
