"""``python -m mdm.devfakes.adcs_cli``: the AD CS web-enrollment fake as a process, for trying
the ``adcs`` source and ``mdm adcs check`` by hand.

Prints ``URL <certsrv url>``, ``CA <root PEM>`` (trust it for the fake's TLS certificate: the
``[adcs] ca_bundle``), ``CHAIN <issuing + root PEM>`` (``[adcs] ca_chain_file``) and, with
``--agent-p12``, writes an Enrollment Agent PKCS#12 the fake trusts (for ``mdm adcs agent import``);
then serves until SIGTERM/SIGINT. Kerberos: ``KRB5_CONFIG`` from the environment, the
``HTTP/<host>`` keytab from ``--keytab``. Templates: the defaults of ``adcs_policy``
(``User``, ``MdmUser`` (Enrollment Agent required), ``MdmDevice``, ``PendingUser``,
``DeniedUser``).
"""

from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from mdm.devfakes.adcs import AdcsFake


def _users(values: list[str]) -> dict[str, str]:
    users: dict[str, str] = {}
    for value in values:
        user, sep, password = value.partition(":")
        if not sep or not user:
            raise SystemExit(f"expected USER:PASSWORD, got {value!r}")
        users[user] = password
    return users


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mdm.devfakes.adcs_cli")
    parser.add_argument("--keytab", type=Path, help="HTTP/<host> keytab: offer Negotiate")
    parser.add_argument("--basic", action="append", default=[], metavar="USER:PASSWORD")
    parser.add_argument("--ntlm", action="append", default=[], metavar="USER:PASSWORD")
    parser.add_argument("--netbios", default="CORP")
    parser.add_argument("--language", choices=["en", "de"], default="en")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--url-host", default="localhost")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("."), help="where CA files are written")
    parser.add_argument("--agent-p12", type=Path, help="write an Enrollment Agent PKCS#12 here")
    parser.add_argument("--agent-password", default="agent")
    args = parser.parse_args(argv)

    schemes = tuple(s for s, on in (("negotiate", args.keytab), ("ntlm", args.ntlm),
                                    ("basic", args.basic)) if on)
    if not schemes:
        parser.error("offer at least one of --keytab, --ntlm, --basic")
    fake = AdcsFake(keytab=args.keytab, auth=schemes, basic_users=_users(args.basic),
                    ntlm_users=_users(args.ntlm), netbios=args.netbios, host=args.host,
                    port=args.port, url_host=args.url_host)
    fake.language = args.language
    args.out.mkdir(parents=True, exist_ok=True)
    root, chain = args.out / "adcs-root.pem", args.out / "adcs-chain.pem"
    root.write_bytes(fake.pki.root.cert_pem)
    chain.write_bytes(fake.pki.issuing.cert_pem + fake.pki.root.cert_pem)
    if args.agent_p12:
        ea = fake.pki.enrollment_agent()
        args.agent_p12.write_bytes(pkcs12.serialize_key_and_certificates(
            b"enrollment-agent", ea.key, ea.cert, None,  # type: ignore[arg-type]
            serialization.BestAvailableEncryption(args.agent_password.encode())))
        args.agent_p12.chmod(0o600)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    fake.start()
    print(f"URL {fake.url}\nCA {root}\nCHAIN {chain}", flush=True)
    try:
        stop.wait()
    finally:
        fake.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
