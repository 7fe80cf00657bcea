"""SCEP vocabulary (RFC 8894 §3.2.1) and the two ways a message can fail."""

from __future__ import annotations

import enum


class MessageType(enum.StrEnum):
    CERT_REP = "3"
    RENEWAL_REQ = "17"
    PKCS_REQ = "19"
    CERT_POLL = "20"  # GetCertInitial in older drafts
    GET_CERT = "21"
    GET_CRL = "22"


class PkiStatus(enum.StrEnum):
    SUCCESS = "0"
    FAILURE = "2"
    PENDING = "3"


class FailInfo(enum.StrEnum):
    BAD_ALG = "0"
    BAD_MESSAGE_CHECK = "1"
    BAD_REQUEST = "2"
    BAD_TIME = "3"
    BAD_CERT_ID = "4"


# Signed-attribute OIDs (Verisign arc, kept by RFC 8894) and id-scep-failInfoText.
OID_MESSAGE_TYPE = "2.16.840.1.113733.1.9.2"
OID_PKI_STATUS = "2.16.840.1.113733.1.9.3"
OID_FAIL_INFO = "2.16.840.1.113733.1.9.4"
OID_SENDER_NONCE = "2.16.840.1.113733.1.9.5"
OID_RECIPIENT_NONCE = "2.16.840.1.113733.1.9.6"
OID_TRANSACTION_ID = "2.16.840.1.113733.1.9.7"
OID_FAIL_INFO_TEXT = "1.3.6.1.5.5.7.24.1"

CONTENT_TYPE_PKI_MESSAGE = "application/x-pki-message"
CONTENT_TYPE_CA_CERT = "application/x-x509-ca-cert"
CONTENT_TYPE_CA_RA_CERT = "application/x-x509-ca-ra-cert"


class MalformedMessage(Exception):
    """The bytes are not a SCEP pkiMessage we can even answer with a CertRep (HTTP 400)."""


class ScepFailure(Exception):
    """A well-formed message that is refused: answered by a CertRep FAILURE with ``fail_info``.

    ``text`` goes to the client as failInfoText and must not contain secrets; ``detail`` is for
    the server log only.
    """

    def __init__(self, fail_info: FailInfo, text: str, detail: str = "") -> None:
        super().__init__(text)
        self.fail_info = fail_info
        self.text = text
        self.detail = detail or text
