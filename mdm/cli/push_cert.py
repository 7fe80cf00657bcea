"""``mdm push apns set-cert FILE``: install Apple's MDM push certificate and its key.

Checks the bundle (``mdm.push.identity``), refuses another topic than the configured one unless
``--new-topic`` (every enrolled device would have to re-enroll), writes ``DATA/apns/push.pem``
and ``push.key`` (mode 0600, replaced atomically), points ``[apns]`` of ``mdm.toml`` at them
(comments kept) and, when a server runs on the data directory, has it reload: a certificate with
the same topic is taken into use without a restart. Never prints the key or the password.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path

import tomlkit

from mdm.cli.common import CliError, config_from
from mdm.config import CONFIG_FILE
from mdm.push.identity import (
    IdentityError,
    check,
    load_identity,
    read_bundle,
    topic_change_message,
    write_identity,
)
from mdm.push.topic import TopicError, is_development, read_topic

RELOAD_TIMEOUT = 15.0


def _password(args: argparse.Namespace) -> bytes | None:
    if args.password_file:
        try:
            text = Path(args.password_file).read_bytes()
        except OSError as exc:
            raise CliError(f"--password-file: cannot read {args.password_file}: {exc.strerror}", 2) from None
        return text.rstrip(b"\r\n")
    if args.password is not None:
        return str(args.password).encode()
    return None


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise CliError(f"{what}: cannot read {path}: {exc.strerror}", exit_code=2) from None


def set_apns_files(config_path: Path, certificate_file: str, key_file: str) -> None:
    """[apns] certificate_file and key_file in mdm.toml, keeping its comments and layout."""
    doc = tomlkit.parse(config_path.read_text())
    section = doc.get("apns")
    if section is None:
        section = tomlkit.table()
        doc["apns"] = section
    section["certificate_file"] = certificate_file
    section["key_file"] = key_file
    tmp = config_path.with_name(f".{config_path.name}.tmp")
    tmp.write_text(tomlkit.dumps(doc))
    tmp.chmod(config_path.stat().st_mode & 0o777)
    tmp.replace(config_path)


def run_set_cert(args: argparse.Namespace) -> int:
    config = config_from(args, check_server=False)
    data = _read(args.file, "FILE")
    if args.key:
        data = data.rstrip(b"\n") + b"\n" + _read(args.key, "--key")
    now = datetime.now(UTC)
    try:
        bundle = read_bundle(data, _password(args), name=args.file)
        topic = check(bundle, now, name=args.file)
    except IdentityError as exc:
        raise CliError(str(exc), exit_code=2) from None
    try:
        current = read_topic(config)
        configured: str | None = current.topic
        development = current.development
    except TopicError:
        configured, development = None, False  # nothing usable configured yet: any topic is the first
    changed = configured is not None and configured != topic
    # mdm init's self-signed development identity cannot wake any device: Apple's replaces it as
    # the README's steps say, without --new-topic.
    if changed and not development and not args.new_topic:
        raise CliError(topic_change_message(topic, configured or ""), exit_code=2)
    data_dir = config.data_path
    try:
        cert_file, key_file = write_identity(data_dir, bundle)
        set_apns_files(data_dir / CONFIG_FILE, cert_file, key_file)
    except OSError as exc:
        raise CliError(f"cannot write {exc.filename or data_dir}: {exc.strerror}") from None
    # What the server will load: read back through the configuration, as it does.
    try:
        identity = load_identity(config_from(args, check_server=False), now)
    except IdentityError as exc:
        raise CliError(f"installed, but the configuration does not load it: {exc}") from None
    days = (identity.not_after - now).days
    print(f"installed the MDM push certificate: topic {identity.topic}, valid until "
          f"{identity.not_after:%Y-%m-%d} ({days} days)")
    print(f"wrote {data_dir / cert_file} and {data_dir / key_file} (mode 0600); "
          f"{data_dir / CONFIG_FILE}: [apns] certificate_file, key_file")
    if changed:
        what = "the development identity's topic" if development else "topic"
        print(f"replaced {what} {configured}: iOS devices enrolled with it must re-enroll to be "
              "woken by push")
    if is_development(bundle.cert):
        print("mdm: warning: this certificate is self-signed, not Apple's: APNs will refuse it",
              file=sys.stderr)
    from mdm.cli.audit_local import record_file_change

    record_file_change(config, "push apns set-cert", topic=identity.topic,
                       serial=format(bundle.cert.serial_number, "x"),
                       replaced_topic=configured if changed else None)
    return _reload(data_dir, changed_topic=changed and not development)


def _reload(data_dir: Path, changed_topic: bool) -> int:
    from mdm.cli.reload_cmd import run_reload
    from mdm.server.runfiles import running_pid

    pid = running_pid(data_dir)
    if pid is None:
        print("no server runs on this data directory: it uses the certificate when it starts")
        return 0
    if changed_topic:
        print(f"a server runs (pid {pid}): restart it to use the new topic (a reload keeps the running "
              "certificate when the topic differs)")
        return 0
    print(f"asking the running server (pid {pid}) to reload")
    try:
        return run_reload(data_dir, RELOAD_TIMEOUT)
    except CliError as exc:
        raise CliError(f"the certificate is installed, but the reload did not succeed: {exc}") from None
