"""Sending enrollment links by e-mail (stdlib smtplib in a worker thread: it blocks)."""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path

from mdm.enroll.config import SmtpConfig


class MailError(Exception):
    """The message could not be handed to the SMTP server; the text is safe to show an admin."""


@dataclass(frozen=True)
class LinkMail:
    to: str
    user: str
    url: str
    expires_at: datetime
    qr_png: bytes | None = None
    platform: str = "ios"


_HOW = {
    "ios": "open this link on the iPhone or iPad you want to enroll, then install the downloaded\n"
           "profile in Settings > General > VPN & Device Management:\n\n",
    "android": "install the KES agent on the Android device you want to enroll, then scan the attached\n"
               "QR code with it (or open this link on the device and open the download with the agent):\n\n",
}


def compose(smtp: SmtpConfig, mail: LinkMail) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = smtp.from_address
    msg["To"] = mail.to
    msg["Subject"] = smtp.subject
    msg["Date"] = formatdate(localtime=False, usegmt=True)
    msg["Message-ID"] = make_msgid(domain=smtp.from_address.rpartition("@")[2] or None)
    expires = mail.expires_at.strftime("%Y-%m-%d %H:%M UTC")
    msg.set_content(
        f"Hello {mail.user},\n\n"
        f"{_HOW.get(mail.platform, _HOW['ios'])}"
        f"    {mail.url}\n\n"
        "The link works once and expires on "
        f"{expires}. If you read this on a computer, scan the attached QR code with the device.\n"
    )
    if mail.qr_png:
        msg.add_attachment(mail.qr_png, maintype="image", subtype="png", filename="enroll-qr.png")
    return msg


def _password(smtp: SmtpConfig) -> str | None:
    if not smtp.password_file:
        return None
    try:
        return Path(smtp.password_file).read_text().strip()
    except OSError as exc:
        raise MailError(f"smtp.password_file: cannot read {smtp.password_file}: {exc.strerror}") from None


def _tls_context(smtp: SmtpConfig) -> ssl.SSLContext:
    try:
        return ssl.create_default_context(cafile=smtp.ca_file or None)
    except (OSError, ssl.SSLError) as exc:
        raise MailError(f"smtp.ca_file: cannot load {smtp.ca_file}: {exc}") from None


def _send_sync(smtp: SmtpConfig, msg: EmailMessage) -> None:
    where = f"SMTP server {smtp.host}:{smtp.port}"
    password = _password(smtp)
    try:
        client: smtplib.SMTP
        if smtp.security == "ssl":
            client = smtplib.SMTP_SSL(
                smtp.host, smtp.port, timeout=smtp.timeout_seconds, context=_tls_context(smtp)
            )
        else:
            client = smtplib.SMTP(smtp.host, smtp.port, timeout=smtp.timeout_seconds)
        with client:
            client.ehlo()
            if smtp.security == "starttls":
                if not client.has_extn("starttls"):
                    raise MailError(f"{where} does not offer STARTTLS (smtp.security = \"starttls\")")
                client.starttls(context=_tls_context(smtp))
                client.ehlo()
            if smtp.username:
                client.login(smtp.username, password or "")
            client.send_message(msg)
    except MailError:
        raise
    except smtplib.SMTPAuthenticationError as exc:
        raise MailError(f"{where} refused the login of {smtp.username!r}: {exc.smtp_code}") from None
    except smtplib.SMTPRecipientsRefused as exc:
        codes = ", ".join(f"{rcpt}: {code} {text.decode(errors='replace')}" for rcpt, (code, text) in
                          exc.recipients.items())
        raise MailError(f"{where} refused the recipient ({codes})") from None
    except smtplib.SMTPResponseException as exc:
        error = exc.smtp_error
        text = error.decode(errors="replace") if isinstance(error, bytes) else str(error)
        raise MailError(f"{where} answered {exc.smtp_code} {text}") from None
    except ssl.SSLError as exc:
        raise MailError(f"{where}: TLS failed: {exc.reason or exc}") from None
    except (smtplib.SMTPException, OSError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        raise MailError(f"{where}: {reason}") from None


async def send(smtp: SmtpConfig, mail: LinkMail) -> None:
    if not smtp.host:
        raise MailError("e-mail delivery is not configured (set smtp.host and smtp.from)")
    await asyncio.to_thread(_send_sync, smtp, compose(smtp, mail))
