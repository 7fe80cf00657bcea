"""Helpers of the kcd tests: principals in the test realm and SPNEGO tokens made by a real gssapi
initiator (what the publishing proxy sends after constrained delegation)."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path

import gssapi

from mdm.devfakes.kdc import Kdc

SPNEGO = gssapi.OID.from_int_seq("1.3.6.1.5.5.2")
# (realm directory, principal) -> password: each test module that imports the kdc fixture gets
# a realm of its own.
_PASSWORDS: dict[tuple[str, str], str] = {}


def principal(kdc: Kdc, name: str) -> tuple[str, str]:
    """``name@REALM`` (created once per realm) and its password."""
    full = f"{name}@{kdc.realm}"
    key = (str(kdc.tmpdir), full)
    if key not in _PASSWORDS:
        _PASSWORDS[key] = kdc.add_user(name)[1]
    return full, _PASSWORDS[key]


def service(kdc: Kdc, name: str) -> str:
    """Another service principal of the realm (its key is in no keytab of ours)."""
    full = f"{name}@{kdc.realm}"
    key = (str(kdc.tmpdir), full)
    if key not in _PASSWORDS:
        kdc.k5.addprinc(full)
        _PASSWORDS[key] = ""
    return full


def login(kdc: Kdc, name: str, ccache: Path, *, lifetime: str | None = None) -> None:
    full, password = principal(kdc, name)
    if lifetime is None:
        kdc.kinit(full, password, ccache)
        return
    subprocess.run(
        ["kinit", "-l", lifetime, "-c", str(ccache), full],
        input=password.encode(), check=True, capture_output=True,
    )


def initiate(target: str) -> tuple[gssapi.SecurityContext, str]:
    """A context for ``target`` from the current ccache and its ``Negotiate`` header value."""
    context = gssapi.SecurityContext(
        name=gssapi.Name(target, gssapi.NameType.kerberos_principal),
        usage="initiate",
        mech=SPNEGO,
        flags=gssapi.RequirementFlag.mutual_authentication,
    )
    token = context.step()
    assert token is not None
    return context, "Negotiate " + base64.b64encode(token).decode()


def verify_mutual(context: gssapi.SecurityContext, www_authenticate: str) -> None:
    """The answer's AP-REP completes the initiator's context (mutual authentication)."""
    scheme, _, value = www_authenticate.partition(" ")
    assert scheme == "Negotiate" and value
    context.step(base64.b64decode(value))
    assert context.complete
