"""E-mail (D3) over real SMTP on loopback: the platform's mailer against the simulator's sink."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import pytest

from gateway.mail import MailError, SmtpMailer
from simulator.mailbox import MailboxState, PostOffice
from ussdgw.config import Settings


@pytest.fixture
async def office() -> AsyncIterator[PostOffice]:
    post = PostOffice()
    await post.start("127.0.0.1", 0)
    yield post
    await post.stop()


def mailer(port: int) -> SmtpMailer:
    return SmtpMailer(Settings(smtp_host="127.0.0.1", smtp_port=port, smtp_timeout_s=3))


async def test_a_mail_with_an_attachment_lands_in_the_mailbox(office: PostOffice) -> None:
    await mailer(office.port).send("Ivan@Example.com", "Детализация", "Во вложении.",
                                   (("detail.csv", "text/csv", b"a;b\n1;2\n"),))
    [mail] = office.box("ivan@example.com").messages
    assert mail.subject == "Детализация" and mail.body.strip() == "Во вложении."
    assert mail.attachments == [{"filename": "detail.csv", "content_type": "text/csv", "size": 8, "text": "a;b\n1;2\n"}]


@pytest.mark.parametrize(("state", "code", "kind"), [(MailboxState.FULL, 452, "mailbox_full"),
                                                     (MailboxState.UNKNOWN, 550, "unknown_address")])
async def test_a_full_or_unknown_mailbox_is_an_error_with_the_servers_code(office: PostOffice, state: MailboxState,
                                                                           code: int, kind: str) -> None:
    office.box("maria@example.com").state = state
    with pytest.raises(MailError) as refused:
        await mailer(office.port).send("maria@example.com", "s", "b")
    assert (refused.value.smtp_code, refused.value.kind) == (code, kind)
    assert office.box("maria@example.com").messages == []


async def test_an_unreachable_server_is_reported_not_swallowed() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(MailError) as refused:
        await mailer(port).send("ivan@example.com", "s", "b")
    assert refused.value.kind == "server_unreachable" and "недоступен" in refused.value.reply
