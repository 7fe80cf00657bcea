"""Accounts: Exchange ActiveSync (``com.apple.eas.account``) and IMAP/POP mail
(``com.apple.mail.managed``)."""

from __future__ import annotations

import uuid as uuidlib
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from mdm.ios.profiles.base import Nested, NonEmpty, PayloadBase, PayloadRef, field

MailAuth = Literal["None", "Password", "CRAMMD5", "NTLM", "HTTPMD5"]


class ExchangeActiveSync(PayloadBase):
    payload_type: ClassVar[str] = "com.apple.eas.account"
    type: Literal["exchange"] = "exchange"

    host: NonEmpty = field("Host", ...)
    ssl: bool = field("SSL", True)
    email_address: str | None = field("EmailAddress")
    username: str | None = field("UserName")
    password: str | None = field("Password")
    oauth: bool | None = field("OAuth")
    # Client-certificate authentication: an identity payload (PKCS#12 or SCEP) in this profile.
    certificate_uuid: PayloadRef | None = field("PayloadCertificateUUID")
    mail_days_to_sync: Literal[0, 1, 3, 7, 14, 31] | None = field("MailNumberOfPastDaysToSync")
    prevent_move: bool | None = field("PreventMove")
    prevent_app_sheet: bool | None = field("PreventAppSheet")
    disable_mail_recents_syncing: bool | None = field("disableMailRecentsSyncing")
    allow_mail_drop: bool | None = field("allowMailDrop")
    smime_signing_enabled: bool | None = field("SMIMESigningEnabled")
    smime_signing_certificate_uuid: PayloadRef | None = field("SMIMESigningCertificateUUID")
    smime_encryption_enabled: bool | None = field("SMIMEEncryptionEnabled")
    smime_encryption_certificate_uuid: PayloadRef | None = field("SMIMEEncryptionCertificateUUID")
    enable_mail: bool | None = field("EnableMail")
    enable_contacts: bool | None = field("EnableContacts")
    enable_calendars: bool | None = field("EnableCalendars")
    enable_reminders: bool | None = field("EnableReminders")
    enable_notes: bool | None = field("EnableNotes")

    @model_validator(mode="after")
    def _smime(self) -> ExchangeActiveSync:
        if self.smime_signing_enabled and self.smime_signing_certificate_uuid is None:
            raise ValueError("smime_signing_enabled needs smime_signing_certificate_uuid")
        if self.smime_encryption_enabled and self.smime_encryption_certificate_uuid is None:
            raise ValueError("smime_encryption_enabled needs smime_encryption_certificate_uuid")
        return self

    def references(self) -> list[uuidlib.UUID]:
        return [u for u in (self.certificate_uuid, self.smime_signing_certificate_uuid,
                            self.smime_encryption_certificate_uuid) if u is not None]


class MailServer(Nested):
    host: NonEmpty
    port: int | None = Field(default=None, ge=1, le=65535)
    ssl: bool = True
    username: str | None = None
    authentication: MailAuth = "Password"
    password: str | None = None


class MailAccount(PayloadBase):
    payload_type: ClassVar[str] = "com.apple.mail.managed"
    type: Literal["mail"] = "mail"

    account_type: Literal["IMAP", "POP"] = "IMAP"
    account_description: str | None = None
    # The user's display name in sent mail.
    account_name: str | None = None
    email_address: str | None = None
    incoming: MailServer
    outgoing: MailServer
    outgoing_password_same_as_incoming: bool | None = None
    imap_path_prefix: str | None = None
    prevent_move: bool | None = None
    prevent_app_sheet: bool | None = None
    allow_mail_drop: bool | None = None
    disable_mail_recents_syncing: bool | None = None
    smime_signing_enabled: bool | None = None
    smime_signing_certificate_uuid: PayloadRef | None = None
    smime_encryption_enabled: bool | None = None
    smime_encryption_certificate_uuid: PayloadRef | None = None

    @model_validator(mode="after")
    def _consistent(self) -> MailAccount:
        if self.imap_path_prefix and self.account_type != "IMAP":
            raise ValueError("imap_path_prefix applies to IMAP accounts only")
        if self.smime_signing_enabled and self.smime_signing_certificate_uuid is None:
            raise ValueError("smime_signing_enabled needs smime_signing_certificate_uuid")
        if self.smime_encryption_enabled and self.smime_encryption_certificate_uuid is None:
            raise ValueError("smime_encryption_enabled needs smime_encryption_certificate_uuid")
        return self

    def content(self) -> dict[str, Any]:
        """Apple's mail payload is flat: the two servers become prefixed keys."""
        out: dict[str, Any] = {"EmailAccountType": f"EmailType{self.account_type}"}
        for prefix, server, password_key in (
            ("IncomingMailServer", self.incoming, "IncomingPassword"),
            ("OutgoingMailServer", self.outgoing, "OutgoingPassword"),
        ):
            out[f"{prefix}HostName"] = server.host
            out[f"{prefix}UseSSL"] = server.ssl
            out[f"{prefix}Authentication"] = f"EmailAuth{server.authentication}"
            if server.port is not None:
                out[f"{prefix}PortNumber"] = server.port
            if server.username is not None:
                out[f"{prefix}Username"] = server.username
            if server.password is not None:
                out[password_key] = server.password
        optional = {
            "EmailAccountDescription": self.account_description,
            "EmailAccountName": self.account_name,
            "EmailAddress": self.email_address,
            "OutgoingPasswordSameAsIncomingPassword": self.outgoing_password_same_as_incoming,
            "IncomingMailServerIMAPPathPrefix": self.imap_path_prefix,
            "PreventMove": self.prevent_move,
            "PreventAppSheet": self.prevent_app_sheet,
            "allowMailDrop": self.allow_mail_drop,
            "disableMailRecentsSyncing": self.disable_mail_recents_syncing,
            "SMIMESigningEnabled": self.smime_signing_enabled,
            "SMIMESigningCertificateUUID": _ref(self.smime_signing_certificate_uuid),
            "SMIMEEncryptionEnabled": self.smime_encryption_enabled,
            "SMIMEEncryptionCertificateUUID": _ref(self.smime_encryption_certificate_uuid),
        }
        out.update({k: v for k, v in optional.items() if v is not None})
        return out

    def references(self) -> list[uuidlib.UUID]:
        return [u for u in (self.smime_signing_certificate_uuid, self.smime_encryption_certificate_uuid)
                if u is not None]


def _ref(value: uuidlib.UUID | None) -> str | None:
    return None if value is None else str(value).upper()
