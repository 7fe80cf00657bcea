"""The ``[adcs]`` configuration section: the AD CS web enrollment server (certsrv) the ``adcs``
certificate source requests certificates from, how it authenticates there, and the Enrollment
Agent settings. Passwords live in files of their own (mode 0600), named here; never in mdm.toml.

The section is optional: without ``url`` the source is not configured, which is an error only
when an issuance rule uses it.
"""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

from pydantic import ConfigDict, Field, model_validator

from mdm.config import Section

SECTION = "adcs"


class AdcsConfig(Section):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)
    name = SECTION

    # The web enrollment root, e.g. https://ca.corp.example.com/certsrv (empty: not configured).
    url: str = ""
    auth: Literal["negotiate", "ntlm", "basic"] = "negotiate"
    # negotiate: the service account's principal (user@REALM) and its keytab or password_file.
    principal: str = ""
    keytab: str = ""
    # ntlm/basic: username (DOMAIN\user or user@domain) and password_file; negotiate: the
    # principal's password when there is no keytab. Mode 0600.
    username: str = ""
    password_file: str = ""
    # PEM bundle that verifies the CA web server's TLS certificate (empty: the system's store).
    ca_bundle: str = ""
    # PEM: the domain CA chain; its CA certificates are trusted for clients' certificates.
    ca_chain_file: str = ""
    # The template of rules that name none.
    default_template: str = ""
    # NetBIOS domain of the requester name (DOMAIN\user) of on-behalf-of requests.
    requester_domain: str = ""
    # Wrap each request in a CMS signed by the Enrollment Agent certificate (mdm adcs agent import).
    enroll_on_behalf: bool = True
    timeout_seconds: float = Field(default=30.0, gt=0, le=600)
    # Passphrase of the Enrollment Agent key at rest (empty: the CA passphrase, [pki] passphrase_file).
    agent_passphrase_file: str = ""

    @model_validator(mode="after")
    def _complete_when_configured(self) -> AdcsConfig:
        if not self.url:
            return self
        parts = urlsplit(self.url)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValueError(f"[adcs] url {self.url!r} is not an http(s) URL with a host")
        if self.auth in ("basic", "ntlm") and parts.scheme != "https":
            raise ValueError(f"[adcs] auth = {self.auth!r} sends the password: url must be https")
        if not self.ca_chain_file:
            raise ValueError("[adcs] url needs ca_chain_file (PEM: the domain CA chain)")
        if self.auth == "negotiate":
            if "@" not in self.principal:
                raise ValueError("[adcs] auth = \"negotiate\" needs principal (user@REALM)")
            if bool(self.keytab) == bool(self.password_file):
                raise ValueError("[adcs] auth = \"negotiate\" needs exactly one of keytab and password_file")
        else:
            if not self.username or not self.password_file:
                raise ValueError(f"[adcs] auth = {self.auth!r} needs username and password_file")
        if self.enroll_on_behalf and not self.requester_domain:
            raise ValueError("[adcs] enroll_on_behalf needs requester_domain (the NetBIOS domain)")
        return self

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""

    @property
    def base_url(self) -> str:
        """The certsrv root without a trailing slash."""
        return self.url.rstrip("/")
