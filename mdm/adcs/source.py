"""The ``adcs`` certificate source: certificates from AD CS web enrollment, requested on the
user's behalf with the Enrollment Agent when ``[adcs] enroll_on_behalf`` (the default).

``adcs_source`` is the factory the composition root hands the PKI plugin under the name
``"adcs"``; it reads files only (the chain, later the agent), never the network, and raises
``ConfigError`` when ``[adcs]`` is not configured (the PKI builds a source at its first use, so
this happens only when a rule names it).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes

from mdm.adcs import agent, auth, cms
from mdm.adcs.client import NAME, CertsrvClient, Issued
from mdm.adcs.config import AdcsConfig
from mdm.config import Config, ConfigError
from mdm.core.errors import InvalidArgument
from mdm.core.kerberos_login import KerberosLogin, KerberosLoginError, read_password_file
from mdm.pki.ca import CertificateAuthority
from mdm.pki.issuance import CertificateRequest, CertificateSource
from mdm.pki.source_errors import SourceUnavailable

log = logging.getLogger(__name__)


def read_ca_chain(path: Path) -> list[x509.Certificate]:
    """The CA certificates of a PEM file (leaf certificates in it are ignored)."""
    try:
        certs = x509.load_pem_x509_certificates(path.read_bytes())
    except OSError as exc:
        raise ConfigError(f"[adcs] ca_chain_file {path}: {exc.strerror}") from None
    except ValueError:
        raise ConfigError(f"[adcs] ca_chain_file {path} holds no PEM certificate") from None
    anchors = []
    for cert in certs:
        try:
            if cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
                anchors.append(cert)
        except x509.ExtensionNotFound:
            continue
    if not anchors:
        raise ConfigError(f"[adcs] ca_chain_file {path} holds no CA certificate")
    return anchors


def issuing_cas(cas: list[x509.Certificate]) -> list[x509.Certificate]:
    """The CAs of the chain that sign no other CA of it: the ones that issue the devices'
    certificates. Only these become client-certificate anchors (trust is anchored on the issuing
    CA itself, partial-chain), so nothing else the enterprise root vouches for authenticates."""
    return [ca for ca in cas
            if not any(other is not ca and other.issuer == ca.subject and other.subject != ca.subject
                       for other in cas)]


def _spki(key: CertificatePublicKeyTypes) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


class AdcsSource:
    name = NAME
    needs_csr = True

    def __init__(self, settings: AdcsConfig, client: CertsrvClient, anchors: list[x509.Certificate], *,
                 data_dir: Path, passphrase: Callable[[], bytes | None]) -> None:
        self.settings = settings
        self.client = client
        self._anchors = anchors
        self.data_dir = data_dir
        self._passphrase = passphrase
        self._agent: tuple[tuple[int, int], agent.AgentIdentity] | None = None

    def trust_anchors(self) -> list[x509.Certificate]:
        return issuing_cas(self._anchors)

    async def sign(self, request: CertificateRequest, public_key: CertificatePublicKeyTypes) -> Issued:
        template = request.template or self.settings.default_template
        if not template:
            raise SourceUnavailable(NAME, f"no template for {request.type.value} certificates: set the "
                                          "rule's template or [adcs] default_template")
        if request.csr is None:
            raise InvalidArgument("the AD CS source needs the requester's PKCS#10 (CSR)")
        payload = request.csr.public_bytes(serialization.Encoding.DER)
        if self.settings.enroll_on_behalf:
            user = request.uid or request.common_name
            try:
                requester = cms.requester_name(self.settings.requester_domain, user)
            except ValueError as exc:
                raise InvalidArgument(str(exc)) from None
            identity = await asyncio.to_thread(self._load_agent)
            payload = cms.wrap_on_behalf(payload, requester, identity.certificate, identity.key)
            log.info("adcs: requesting a %s certificate (template %s) on behalf of %s",
                     request.type.value, template, requester)
        cert, chain = await self.client.submit(payload, template)
        if _spki(cert.public_key()) != _spki(public_key):
            raise SourceUnavailable(NAME, "CA returned a certificate for another key")
        return cert, chain

    async def poll(self, request_id: str) -> Issued:
        return await self.client.fetch(request_id)

    def _load_agent(self) -> agent.AgentIdentity:
        folder = agent.agent_dir(self.data_dir)
        try:
            stamp = ((folder / agent.CERT_FILE).stat().st_mtime_ns,
                     (folder / agent.KEY_FILE).stat().st_mtime_ns)
            if self._agent is not None and self._agent[0] == stamp:
                agent.check(self._agent[1].certificate, self._agent[1].key)
                return self._agent[1]
            identity = agent.load(self.data_dir, self._passphrase())
        except FileNotFoundError:
            raise SourceUnavailable(NAME, f"no Enrollment Agent certificate in {folder}: "
                                          "run `mdm adcs agent import`") from None
        except agent.AgentError as exc:
            log.warning("adcs: %s", exc)
            raise SourceUnavailable(NAME, str(exc)) from None
        self._agent = (stamp, identity)
        return identity


def build_auth(settings: AdcsConfig, data_dir: Path) -> tuple[httpx.Auth, str]:
    """The httpx Auth of the configured scheme and a label for messages (no secret in it)."""
    if settings.auth == "basic":
        return auth.basic(settings.username, _password(settings)), f"Basic ({settings.username})"
    try:
        import spnego  # noqa: F401  (the optional extra: fail here, at configuration time)
    except ImportError as exc:
        raise ConfigError(
            f"[adcs] auth = {settings.auth!r} needs the Kerberos/NTLM libraries ({exc.name or exc}): "
            "pip install 'mdm[eas]' (they build against MIT Kerberos: Debian's libkrb5-dev)"
        ) from None
    if settings.auth == "ntlm":
        return auth.ntlm(settings.username, _password(settings), settings.host), f"NTLM ({settings.username})"
    try:
        login = KerberosLogin(
            principal=settings.principal, cache_dir=data_dir / "adcs" / "krb", label="adcs",
            keytab=Path(settings.keytab) if settings.keytab else None,
            password_file=Path(settings.password_file) if settings.password_file else None,
        )
    except KerberosLoginError as exc:
        raise ConfigError(str(exc)) from None
    return auth.negotiate(login.credential, settings.host), f"Negotiate ({settings.principal})"


def _password(settings: AdcsConfig) -> str:
    return read_password_file(Path(settings.password_file), "adcs", ConfigError)


def build_client(config: Config) -> tuple[CertsrvClient, str]:
    """The certsrv client of ``[adcs]`` (no network I/O) and its authentication's label."""
    settings = config.section(AdcsConfig)
    if not settings.url:
        raise ConfigError("certificate source 'adcs' is not configured: set [adcs] url (docs/PKI.md)")
    auth, label = build_auth(settings, config.data_path)
    ca_bundle = str(config.resolve(settings.ca_bundle)) if settings.ca_bundle else ""
    if ca_bundle and not Path(ca_bundle).is_file():
        raise ConfigError(f"[adcs] ca_bundle {ca_bundle} does not exist")
    client = CertsrvClient(settings.base_url, auth=auth, timeout=settings.timeout_seconds,
                           ca_bundle=ca_bundle, auth_label=label)
    return client, label


def agent_passphrase(config: Config) -> bytes | None:
    return agent.passphrase(config.section(AdcsConfig).agent_passphrase_file, config.ca_passphrase())


def adcs_source(config: Config, _ca: CertificateAuthority) -> CertificateSource:
    settings = config.section(AdcsConfig)
    if not settings.url:
        raise ConfigError("certificate source 'adcs' is not configured: set [adcs] url (docs/PKI.md)")
    anchors = read_ca_chain(config.resolve(settings.ca_chain_file))
    client, label = build_client(config)

    log.info("adcs: certificate source %s, %s, template %s, on behalf: %s", settings.base_url, label,
             settings.default_template or "(per rule)", settings.enroll_on_behalf)
    return AdcsSource(settings, client, anchors, data_dir=config.data_path,
                      passphrase=lambda: agent_passphrase(config))
