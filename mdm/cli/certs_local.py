"""``mdm certs set|import-ca|encrypt-keys``: they change files in this host's data directory
that the server reads (server certificates, the CA), then signal the running server.

Imported only when one of them runs (``mdm.cli.certs_cmd`` parses their arguments): they need
the crypto and database stacks. Their SQL is in ``mdm.pki.store`` (through ``mdm.pki.replace``).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import signal
from pathlib import Path
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from mdm.cli import output
from mdm.cli.certs_io import password as _password
from mdm.cli.certs_io import read_input as _read
from mdm.cli.common import CliError, config_from
from mdm.config import Config, ConfigError
from mdm.core import audit
from mdm.db.engine import Database, DatabaseUnavailable
from mdm.pki import castore, replace
from mdm.pki.ca import ISSUING_KEY, ROOT_KEY, CAError, CertificateAuthority
from mdm.pki.certcheck import CertInputError, CertSummary
from mdm.pki.keys import KeyError_, key_is_encrypted, load_key, save_key
from mdm.pki.slots import SLOTS
from mdm.server.runtime import running_pid


# ---- server certificates and the CA (local) ----------------------------------------------------
def _describe(summary: CertSummary | None) -> str:
    if summary is None:
        return "(none)"
    return (f"{summary.subject}, serial {summary.serial}, valid until {summary.not_after:%Y-%m-%d %H:%M}Z, "
            f"sha256 {summary.fingerprint}")


def run_set(args: argparse.Namespace) -> int:
    config = config_from(args)
    data = _read(args.input, "-i")
    password = _password(args.password, "PKCS#12 password: ", required=False)
    own_ca = _own_ca_certs(config)
    try:
        prepared = replace.prepare(data, password, args.slot, config.hostname, own_ca)
    except CertInputError as exc:
        raise CliError(f"{args.input}: {exc.message}; slot {args.slot} unchanged") from None
    old = replace.current(config.certs_dir, args.slot)
    pinned, db_problem = _db_call(config, lambda db: _count_pinned(db, old))
    try:
        replace.write(config.certs_dir, prepared)
    except OSError as exc:
        raise CliError(f"cannot write slot {args.slot} in {config.certs_dir}: {exc.strerror}") from None
    with audit.local_action("certs set", slot=args.slot, serial=prepared.new.serial):
        _, event_problem = _db_call(config, lambda db: _record(db, args.slot, old, prepared.new, pinned))
    slot = SLOTS[args.slot]
    print(f"slot {args.slot} ({slot.description}) replaced")
    print(f"  old: {_describe(old)}")
    print(f"  new: {_describe(prepared.new)}")
    top = prepared.chain[-1].subject.rfc4514_string()
    print(f"  chain: {len(prepared.chain)} certificate(s) up to {top}")
    if old is not None:
        if pinned is None:
            print(f"  pinned devices: unknown ({db_problem})")
        else:
            print(f"  pinned devices: {pinned} device(s) pinned the old certificate"
                  + ("; they must receive the new pin" if pinned else ""))
    for warning in prepared.warnings:
        output.note(f"warning: {warning}")
    if event_problem:
        output.note(f"warning: the replacement event was not recorded ({event_problem})")
    if slot.reserve_of is None and args.slot in ("C", "M"):
        output.note(f"note: the reserve slot {args.slot}R serves while {args.slot} is unusable")
    _signal_reload(config, args.no_reload)
    return 0


def _own_ca_certs(config: Config) -> list[Any]:
    from cryptography import x509

    certs = []
    for name in ("chain.pem", "root.pem"):
        try:
            certs += x509.load_pem_x509_certificates((config.ca_dir / name).read_bytes())
        except (OSError, ValueError):
            continue
    return certs


async def _count_pinned(db: Database, old: CertSummary | None) -> int | None:
    if old is None:
        return None
    async with db.session() as session:
        return await replace.count_pinned(session, old.fingerprint)


async def _record(
    db: Database, slot: str, old: CertSummary | None, new: CertSummary, pinned: int | None
) -> None:
    async with db.transaction() as session:
        await replace.record(session, slot, old, new, pinned, by=_operator())


def _operator() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except Exception:
        return "cli"


def _db_call(config: Config, fn: Any) -> tuple[Any, str | None]:
    """Run ``fn(db)``; database trouble is reported, not fatal (files are the source of truth here)."""

    async def go() -> Any:
        db = Database(config.database_url, config.database.pool_size)
        try:
            await db.check(timeout=5)
            return await fn(db)
        finally:
            await db.close()

    try:
        return asyncio.run(go()), None
    except (DatabaseUnavailable, SQLAlchemyError, OSError) as exc:
        return None, str(exc).splitlines()[0][:200]


def _signal_reload(config: Config, disabled: bool) -> None:
    pid = running_pid(config.data_path)
    if pid is None:
        print("no running server for this data directory: the new certificate is used at the next start")
        return
    if disabled:
        print(f"server (pid {pid}) not signalled (--no-reload): run `mdm reload` to switch")
        return
    try:
        os.kill(pid, signal.SIGHUP)
    except OSError as exc:
        raise CliError(f"cannot signal the server (pid {pid}): {exc.strerror}; run `mdm reload`") from None
    print(f"asked the running server (pid {pid}) to reload: new connections get the new certificate")


def run_import_ca(args: argparse.Namespace) -> int:
    config = config_from(args)
    if args.p12:
        if args.key or args.chain:
            raise CliError("--key/--chain go with --cert, not with --p12", exit_code=2)
        def load() -> castore.Material:
            return castore.material_from_p12(_read(args.p12, "--p12"), args.password)

        what = args.p12
    else:
        if not args.key:
            raise CliError("--cert needs --key FILE (the CA's private key)", exit_code=2)
        extra = _read(args.chain, "--chain") if args.chain else None
        cert_data, key_data = _read(args.cert, "--cert"), _read(args.key, "--key")
        def load() -> castore.Material:
            return castore.material_from_files(cert_data, key_data, args.password, extra)

        what = args.cert
    try:
        cert, key, pool = load()
        material = castore.validate_ca(cert, key, pool)
    except CertInputError as exc:
        raise CliError(f"{what}: {exc.message}; the CA is unchanged") from None
    previous = _current_issuing(config)
    try:
        passphrase = config.ca_passphrase()
        retired = castore.install(config.ca_dir, material, passphrase)
    except (ConfigError, OSError) as exc:
        raise CliError(f"cannot install the CA in {config.ca_dir}: {exc}") from None
    reissued = _reissue_server_certs(config, passphrase, previous) if args.reissue_server_certs else []
    summary = CertSummary.of(material.certificate)
    with audit.local_action("certs import-ca", serial=summary.serial):
        _, problem = _db_call(config, lambda db: _record_import(db, summary, retired))
    print(f"issuing CA is now {_describe(summary)}")
    print(f"  chain: {' <- '.join(c.subject.rfc4514_string() for c in reversed(material.chain))}")
    print(f"  key stored in {config.ca_dir / ISSUING_KEY} (0600{', encrypted' if passphrase else ''})")
    if retired is not None:
        print(f"  previous CA moved to {retired}; certificates it issued stay trusted until they expire")
    if reissued:
        print(f"  reissued the server certificates of slots {', '.join(reissued)} from the imported CA")
    elif retired is not None:
        print("  server certificates are unchanged (they still chain to the previous root, kept in "
              "root.pem); replace them with `mdm certs set`, or --reissue-server-certs, once devices "
              "trust the new root")
    for warning in material.warnings:
        output.note(f"warning: {warning}")
    if problem:
        output.note(f"warning: the import event was not recorded ({problem})")
    if running_pid(config.data_path) is not None:
        output.note("restart the running server (`mdm serve`) so that it issues from the imported CA")
    return 0


def _current_issuing(config: Config) -> Any:
    from cryptography import x509

    try:
        return x509.load_pem_x509_certificate((config.ca_dir / "issuing.pem").read_bytes())
    except (OSError, ValueError):
        return None


def _reissue_server_certs(config: Config, passphrase: bytes | None, previous: Any) -> list[str]:
    """Reissue, from the new CA, the slot certificates the previous internal CA issued (those
    brought in with `mdm certs set` are left alone)."""
    from cryptography.exceptions import InvalidSignature

    from mdm.cli.init_cmd import server_hostnames
    from mdm.pki.crl import crl_url_for
    from mdm.pki.slots import issue_server_certificate, load_slot_chain

    if previous is None:
        return []
    try:
        ca = CertificateAuthority.load(config.ca_dir, passphrase)
    except (CAError, KeyError_) as exc:
        raise CliError(f"the CA was imported but does not load: {exc}") from None
    ca.crl_url = crl_url_for(config)
    done = []
    for slot in SLOTS:
        try:
            leaf = load_slot_chain(config.certs_dir, slot)[0]
            leaf.verify_directly_issued_by(previous)
        except (OSError, ValueError, IndexError, TypeError, InvalidSignature):
            continue
        issue_server_certificate(
            ca, config.certs_dir, slot, server_hostnames(config), key_type=config.pki.key_type,
            rsa_bits=config.pki.rsa_bits, days=config.pki.server_validity_days,
        )
        done.append(slot)
    return done


async def _record_import(db: Database, summary: CertSummary, retired: Path | None) -> None:
    from mdm.core import events
    from mdm.pki.event_types import CA_IMPORTED

    async with db.transaction() as session:
        events.emit(session, CA_IMPORTED, subject=summary.subject, serial=summary.serial,
                    sha256=summary.fingerprint, not_after=summary.not_after.isoformat(),
                    retired=str(retired) if retired else None, by=_operator())


def run_encrypt_keys(args: argparse.Namespace) -> int:
    config = config_from(args)
    try:
        passphrase = config.ca_passphrase()
    except ConfigError as exc:
        raise CliError(str(exc), exit_code=2) from None
    if not passphrase:
        raise CliError("no passphrase configured: set pki.passphrase_file or MDM_CA_PASSPHRASE", exit_code=2)
    paths = [config.ca_dir / ISSUING_KEY, config.ca_dir / ROOT_KEY]
    retired_dir = config.ca_dir / castore.RETIRED
    if retired_dir.is_dir():
        paths += sorted(retired_dir.glob(f"*/{ISSUING_KEY}")) + sorted(retired_dir.glob(f"*/{ROOT_KEY}"))
    done = 0
    for path in paths:
        if not path.exists() or key_is_encrypted(path):
            continue
        try:
            save_key(path, load_key(path), passphrase)
        except KeyError_ as exc:
            raise CliError(str(exc)) from None
        print(f"  encrypted {path}")
        done += 1
    try:
        CertificateAuthority.load(config.ca_dir, passphrase)
    except (CAError, KeyError_) as exc:
        raise CliError(f"the CA does not load with the configured passphrase: {exc}") from None
    print(f"{done} key(s) encrypted" if done else "every CA key is already encrypted")
    if done:
        from mdm.cli.audit_local import record_file_change

        record_file_change(config, "certs encrypt-keys", keys=done)
    return 0
