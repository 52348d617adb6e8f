"""E-mail out of the platform (P8 passwords, M5 call detail) through SMTP, with aiosmtplib.

A refusal is not swallowed (D3): `MailError` says what the server answered (its SMTP code) and
what to tell the subscriber. 4xx/5xx on the recipient (452/552 mailbox full, 550 no such
address) and an unreachable server are told apart.
"""

from __future__ import annotations

from email.message import EmailMessage
from email.utils import make_msgid

import aiosmtplib

from handlers.ports import MailError
from ussdgw.config import Settings
from ussdgw.logs import get_logger

log = get_logger("ussdgw.mail")


class SmtpMailer:
    """Sends through `settings.smtp_host:smtp_port` (no TLS on the loopback sink; STARTTLS when offered)."""

    def __init__(self, settings: Settings) -> None:
        self.host = settings.smtp_host
        self.port = settings.smtp_port
        self.timeout = settings.smtp_timeout_s
        self.sender = settings.mail_from

    async def send(self, to: str, subject: str, body: str,
                   attachments: tuple[tuple[str, str, bytes], ...] = ()) -> None:
        message = EmailMessage()
        message["From"] = self.sender
        message["To"] = to
        message["Subject"] = subject
        message["Message-ID"] = make_msgid(domain=self.sender.rpartition("@")[2] or "localhost")
        message.set_content(body)
        for filename, mime, data in attachments:
            maintype, _, subtype = mime.partition("/")
            message.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
        try:
            await aiosmtplib.send(message, hostname=self.host, port=self.port, timeout=self.timeout,
                                  start_tls=None, use_tls=False)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            first = exc.recipients[0]
            raise MailError(first.code, first.message) from None
        except aiosmtplib.SMTPResponseException as exc:
            raise MailError(exc.code, exc.message) from None
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise MailError(0, str(exc)) from None
        log.info("mail_sent", subject_len=len(subject), attachments=len(attachments))
