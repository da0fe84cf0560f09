"""The agent's side of an SFTP login: one question per login, brief memory of a yes."""

from __future__ import annotations

import asyncio

from hostplane.agent.asks import PanelQuestions
from hostplane.agent.sftp.authorizer import SftpAuthorizer
from hostplane.protocol import Error, Response, SftpAuthorize, WireModel


class Panel:
    """Answers the questions the way the gateway does: on the same request id."""

    def __init__(self) -> None:
        self.asked: list[SftpAuthorize] = []
        self.verdict: Response | Error | None = None
        self.questions = PanelQuestions(self.send, timeout=0.5)
        self.questions.available = True

    async def send(self, message: WireModel) -> None:
        assert isinstance(message, SftpAuthorize)
        self.asked.append(message)
        if self.verdict is None:
            return  # never answered
        answer = self.verdict.model_copy(update={"request_id": message.request_id})
        asyncio.get_running_loop().call_soon(self.questions.deliver, answer)


def grant(*permissions: str) -> Response:
    return Response(request_id="-", data={"userId": "u1", "permissions": list(permissions)})


async def test_a_yes_is_remembered_for_a_minute_per_server_and_credential() -> None:
    panel, now = Panel(), [1000.0]
    authorizer = SftpAuthorizer(panel.questions.ask, clock=lambda: now[0])
    panel.verdict = grant("file.sftp", "file.read")

    first = await authorizer.authorize("srv1", "token-a", client_ip="198.51.100.7")
    assert first is not None and first.permissions == {"file.sftp", "file.read"}
    assert [(m.server_id, m.credential, m.client_ip) for m in panel.asked] == [
        ("srv1", "token-a", "198.51.100.7")
    ]
    assert await authorizer.authorize("srv1", "token-a") == first
    assert len(panel.asked) == 1
    # Another credential or another server is asked about.
    await authorizer.authorize("srv1", "token-b")
    await authorizer.authorize("srv2", "token-a")
    assert len(panel.asked) == 3
    now[0] += 61
    await authorizer.authorize("srv1", "token-a")
    assert len(panel.asked) == 4


async def test_a_no_is_never_remembered_and_no_answer_means_no() -> None:
    panel = Panel()
    authorizer = SftpAuthorizer(panel.questions.ask)
    panel.verdict = Error(code="FORBIDDEN", message="Access denied")
    assert await authorizer.authorize("srv1", "token") is None
    assert await authorizer.authorize("srv1", "token") is None
    assert len(panel.asked) == 2

    # A grant without file.sftp, or not a grant at all, is a no.
    panel.verdict = grant("file.read")
    assert await authorizer.authorize("srv1", "token") is None
    panel.verdict = Response(request_id="-", data="yes")
    assert await authorizer.authorize("srv1", "token") is None

    # The panel does not answer in time.
    panel.verdict = None
    assert await authorizer.authorize("srv1", "token") is None

    # The panel is not connected: nothing is sent.
    panel.verdict = grant("file.sftp")
    panel.questions.connection_lost()
    asked = len(panel.asked)
    assert await authorizer.authorize("srv1", "token") is None
    assert len(panel.asked) == asked


async def test_names_that_cannot_be_server_ids_are_refused_without_asking() -> None:
    panel = Panel()
    panel.verdict = grant("file.sftp")
    authorizer = SftpAuthorizer(panel.questions.ask)
    for username in ("", "../srv", "a" * 65, "srv 1", "srv\x00"):
        assert await authorizer.authorize(username, "token") is None
    assert await authorizer.authorize("srv1", "") is None
    assert panel.asked == []
