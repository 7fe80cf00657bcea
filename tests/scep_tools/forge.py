"""Builds SCEP messages the way a client would, with knobs to make them wrong in one specific way.

Valid parts come from mdm.scep (the same code a real client uses); the wrongness is added here:
other algorithms in the envelope, a different digest, a broken signature, a foreign signer.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime

import httpx
from asn1crypto import algos, cms, core
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import AttributeOID, NameOID

from mdm.scep import client, envelope, messages
from mdm.scep.protocol import MessageType


@dataclass
class Forged:
    der: bytes
    transaction_id: str
    nonce: bytes
    identity: x509.Certificate
    identity_key: rsa.RSAPrivateKey


@dataclass
class Forge:
    """A client with a key and a server's GetCACert answer."""

    server: client.ServerInfo
    key: rsa.RSAPrivateKey
    cn: str = "device"
    identity: x509.Certificate = field(init=False)

    def __post_init__(self) -> None:
        self.identity = client.self_signed(self.key, self.cn)

    def csr(self, challenge: str | None, *, cn: str | None = None) -> bytes:
        if cn == "":  # a subject without a common name
            builder = x509.CertificateSigningRequestBuilder().subject_name(
                x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "no-cn")])
            )
            if challenge is not None:
                builder = builder.add_attribute(AttributeOID.CHALLENGE_PASSWORD, challenge.encode())
            return builder.sign(self.key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)
        return client.build_csr(self.key, cn or self.cn, challenge).public_bytes(serialization.Encoding.DER)

    def message(
        self,
        content: bytes,
        *,
        kind: MessageType | str = MessageType.PKCS_REQ,
        encryption: envelope.Encryption = "aes256",
        digest: str = "sha256",
        transaction_id: str | None = None,
        envelope_der: bytes | None = None,
        identity: x509.Certificate | None = None,
        identity_key: rsa.RSAPrivateKey | None = None,
        recipient: x509.Certificate | None = None,
        signing_time: datetime | None = None,
    ) -> Forged:
        tid = transaction_id or client.transaction_id_for(self.key.public_key())
        nonce = messages.new_nonce()
        ident, ident_key = identity or self.identity, identity_key or self.key
        sealed = envelope_der or envelope.encrypt(content, recipient or self.server.recipient, encryption)
        der = messages.request(
            message_type=MessageType.PKCS_REQ,
            transaction_id=tid,
            sender_nonce=nonce,
            envelope=sealed,
            signer_cert=ident,
            signer_key=ident_key,
            digest=digest,
            signing_time=signing_time,
        )
        if str(kind) != MessageType.PKCS_REQ.value:
            der = resign(der, ident_key, message_type=str(kind))
        return Forged(der, tid, nonce, ident, ident_key)

    def pkcs_req(self, challenge: str | None, **kwargs: object) -> Forged:
        return self.message(self.csr(challenge), **kwargs)  # type: ignore[arg-type]


def resign(
    der: bytes, key: rsa.RSAPrivateKey, *, digest: str | None = None, message_type: str | None = None
) -> bytes:
    """Re-sign a pkiMessage after changing its digest algorithm (e.g. to MD5) or messageType."""
    info = cms.ContentInfo.load(der)
    signed = info["content"]
    signer = signed["signer_infos"][0]
    name = digest or signer["digest_algorithm"]["algorithm"].native
    hash_cls = {"md5": hashes.MD5, "sha1": hashes.SHA1, "sha256": hashes.SHA256}[name]
    h = hashes.Hash(hash_cls())
    h.update(signed["encap_content_info"]["content"].native)
    attrs = []
    for attr in signer["signed_attrs"]:
        if attr["type"].native == "message_digest":
            attr = cms.CMSAttribute({"type": "message_digest", "values": [h.finalize()]})
        elif message_type is not None and attr["type"].dotted == "2.16.840.1.113733.1.9.2":
            attr = cms.CMSAttribute(
                {"type": attr["type"].dotted, "values": [core.PrintableString(message_type)]}
            )
        attrs.append(attr)
    signed_attrs = cms.CMSAttributes(attrs)
    new_signer = cms.SignerInfo(
        {
            "version": signer["version"].native,
            "sid": signer["sid"],
            "digest_algorithm": {"algorithm": name},
            "signed_attrs": signed_attrs,
            "signature_algorithm": {"algorithm": "rsassa_pkcs1v15"},
            "signature": key.sign(signed_attrs.dump(), padding.PKCS1v15(), hash_cls()),
        }
    )
    new_signed = cms.SignedData(
        {
            "version": signed["version"].native,
            "digest_algorithms": [{"algorithm": name}],
            "encap_content_info": signed["encap_content_info"],
            "certificates": signed["certificates"],
            "signer_infos": [new_signer],
        }
    )
    return bytes(cms.ContentInfo({"content_type": "signed_data", "content": new_signed}).dump())


def with_content_algorithm(envelope_der: bytes, algorithm: str) -> bytes:
    """The same envelope, relabelled with another content-encryption algorithm (rc2, des)."""
    info = cms.ContentInfo.load(envelope_der)
    enveloped = info["content"]
    eci = enveloped["encrypted_content_info"]
    if algorithm == "rc2":
        alg = algos.EncryptionAlgorithm(
            {
                "algorithm": "rc2",
                "parameters": algos.Rc2Params({"rc2_parameter_version": 58, "iv": os.urandom(8)}),
            }
        )
    else:
        alg = algos.EncryptionAlgorithm(
            {"algorithm": algorithm, "parameters": core.OctetString(os.urandom(8))}
        )
    new_eci = cms.EncryptedContentInfo(
        {
            "content_type": "data",
            "content_encryption_algorithm": alg,
            "encrypted_content": eci["encrypted_content"],
        }
    )
    new_env = cms.EnvelopedData(
        {
            "version": enveloped["version"].native,
            "recipient_infos": enveloped["recipient_infos"],
            "encrypted_content_info": new_eci,
        }
    )
    return bytes(cms.ContentInfo({"content_type": "enveloped_data", "content": new_env}).dump())


def flip_signature(der: bytes) -> bytes:
    info = cms.ContentInfo.load(der)
    signed = info["content"]
    signer = signed["signer_infos"][0]
    sig = bytearray(signer["signature"].native)
    sig[10] ^= 0xFF
    new_signer = cms.SignerInfo(
        {
            **{
                k: signer[k]
                for k in ("version", "sid", "digest_algorithm", "signed_attrs", "signature_algorithm")
            },
            "signature": bytes(sig),
        }
    )
    new_signed = cms.SignedData(
        {
            **{k: signed[k] for k in ("version", "digest_algorithms", "encap_content_info", "certificates")},
            "signer_infos": [new_signer],
        }
    )
    return bytes(cms.ContentInfo({"content_type": "signed_data", "content": new_signed}).dump())


async def post(
    http: httpx.AsyncClient, url: str, der: bytes, content_type: str = "application/x-pki-message"
) -> httpx.Response:
    return await http.post(
        url, params={"operation": "PKIOperation"}, content=der, headers={"Content-Type": content_type}
    )


def reply_of(response: httpx.Response, forged: Forged, server: client.ServerInfo) -> messages.PkiMessage:
    """Parse and check a CertRep: signed by the RA, echoing our transactionID and nonce."""
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/x-pki-message"
    reply = messages.parse(response.content)
    reply.verify(server.signer)
    assert reply.message_type == MessageType.CERT_REP
    assert reply.transaction_id == forged.transaction_id
    assert reply.recipient_nonce == forged.nonce
    assert reply.sender_nonce != forged.nonce
    return reply


def issued(reply: messages.PkiMessage, forged: Forged) -> x509.Certificate:
    assert reply.content is not None
    inner, _ = envelope.decrypt(reply.content, forged.identity, forged.identity_key)
    return messages.certificates_of(inner)[0]
