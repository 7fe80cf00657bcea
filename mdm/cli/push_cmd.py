"""``mdm push apns csr``: the first step towards Apple's MDM push certificate.

Apple issues the MDM push certificate (whose subject UID is the topic devices are woken on) to a
certificate signing request that an MDM vendor has signed: this command writes the private key
(mode 0600) and the CSR; the README's "Try it without an Apple certificate" section gives the
remaining steps (vendor signature, upload at https://identity.apple.com/pushcert, installing
the certificate). Until then ``mdm init``'s development push identity stands in.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from mdm.cli.common import CliError, Subparsers


def register(sub: Subparsers) -> None:
    push = sub.add_parser("push", help="push notification services (APNs)").add_subparsers(
        dest="service", metavar="SERVICE", required=True
    )
    apns = push.add_parser("apns", help="Apple Push Notification service").add_subparsers(
        dest="action", metavar="ACTION", required=True
    )
    p = apns.add_parser(
        "csr",
        help="write a private key and a certificate signing request for the MDM push certificate",
        description="Write a new RSA 2048 key (mode 0600) and a CSR for Apple's MDM push certificate. "
        "Have the CSR signed through an MDM vendor, upload the signed request at "
        "https://identity.apple.com/pushcert, and install the certificate Apple returns with this key.",
    )
    p.add_argument("--out", required=True, metavar="FILE.csr", help="where to write the CSR (PEM)")
    p.add_argument("--key", metavar="FILE.key", help="where to write the private key (default: FILE.key)")
    p.add_argument("--cn", default="mdm APNs push", help="subject common name (default: %(default)s)")
    p.add_argument("--email", metavar="ADDR", help="subject e-mail address (optional)")
    p.add_argument("--force", action="store_true", help="overwrite existing files")
    p.set_defaults(func=run_csr)


def run_csr(args: argparse.Namespace) -> int:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import NameOID

    from mdm.pki.keys import generate_key, write_private

    csr_path = Path(args.out)
    key_path = Path(args.key) if args.key else csr_path.with_suffix(".key")
    if key_path == csr_path:
        raise CliError("--key and --out must be different files", exit_code=2)
    for path in (csr_path, key_path):
        if path.is_dir():
            raise CliError(f"{path}: is a directory", exit_code=2)
        if path.exists() and not args.force:
            raise CliError(f"{path} exists; nothing was written (--force overwrites it)", exit_code=2)
        if not path.parent.is_dir():
            raise CliError(f"{path}: directory {path.parent} does not exist", exit_code=2)
    if not 1 <= len(args.cn) <= 64:
        raise CliError("--cn: 1 to 64 characters", exit_code=2)
    if args.email is not None and (not args.email.isascii() or "@" not in args.email or " " in args.email):
        raise CliError(f"--email {args.email!r}: not an e-mail address", exit_code=2)
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, args.cn)]
    if args.email:
        attributes.append(x509.NameAttribute(NameOID.EMAIL_ADDRESS, args.email))
    key = generate_key("rsa", 2048)  # what Apple's push certificates use
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name(attributes))
        .sign(key, hashes.SHA256())
    )
    pem_key = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    try:
        write_private(key_path, pem_key)
        tmp = csr_path.with_name(f".{csr_path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(csr.public_bytes(serialization.Encoding.PEM))
        tmp.replace(csr_path)
    except OSError as exc:
        raise CliError(f"cannot write {exc.filename or csr_path}: {exc.strerror}") from None
    print(f"wrote {key_path} (private key, mode 0600: keep it; the certificate Apple issues goes with it)")
    print(f"wrote {csr_path} (certificate signing request)")
    print("next: have the CSR signed through an MDM vendor, upload the signed request at")
    print("https://identity.apple.com/pushcert, download the certificate, then")
    print("`mdm push apns set-cert FILE` (or set [apns] certificate_file to it and run `mdm reload`)")
    return 0
