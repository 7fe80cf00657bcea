"""The first hour of an administrator, part one, as subprocesses: ``mdm init`` makes a development
push identity (and keeps Apple's certificate when one is configured), checks the public host name,
re-issues server certificates without touching the CA; ``mdm tokens create --local`` mints a
token from the data directory; ``mdm push apns csr`` writes the key and the CSR for Apple."""

from __future__ import annotations

import asyncio
import os
import re
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from enroll_support import PUSH_PEM, PUSH_TOPIC
from test_cli_init_serve import PG_URL, TOKEN_RE, base_env, error_lines, mdm, snapshot

from mdm.cli import hostcheck
from mdm.config_sections import load as load_config
from mdm.core import tokens
from mdm.db.engine import Database
from mdm.push.config import ApnsConfig
from mdm.push.topic import DEVELOPMENT_CN, read_topic

# RFC 6761: names under .invalid never resolve.
UNRESOLVABLE = "mdm.does-not-exist.invalid"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def env(request: pytest.FixtureRequest) -> dict[str, str]:
    if PG_URL:
        return base_env(MDM_DATABASE_URL=request.getfixturevalue("database_url"))
    return base_env()


def _url(env: dict[str, str], data: Path) -> str:
    return env.get("MDM_DATABASE_URL") or f"sqlite+aiosqlite:///{data / 'mdm.sqlite3'}"


def _init(data: Path, env: dict[str, str], *extra: str) -> str:
    r = mdm("init", "--data-dir", str(data), "--hostname", "127.0.0.1", *extra, env=env)
    assert r.returncode == 0, r.stderr
    return r.stdout + r.stderr


# ---- the development push identity ----------------------------------------------------------------
def test_init_makes_a_labelled_development_push_identity(tmp_path: Path, env: dict[str, str]) -> None:
    data = tmp_path / "d"
    r = mdm("init", "--data-dir", str(data), "--hostname", "127.0.0.1", env=env)
    assert r.returncode == 0, r.stderr
    assert "created a DEVELOPMENT push identity" in r.stdout
    # the warning names the consequence and the way to Apple's certificate
    assert "WARNING: iOS push uses a self-signed DEVELOPMENT identity" in r.stderr
    assert "cannot be woken by push" in r.stderr
    assert "mdm push apns csr --out push.csr" in r.stderr
    assert "https://identity.apple.com/pushcert" in r.stderr
    assert "mdm push apns set-cert FILE" in r.stderr

    config = load_config(data, env={})
    assert config.section(ApnsConfig).certificate_file == "apns/development-push.pem"
    cert = x509.load_pem_x509_certificate((data / "apns" / "development-push.pem").read_bytes())
    uid = cert.subject.get_attributes_for_oid(NameOID.USER_ID)[0].value
    assert re.fullmatch(r"com\.apple\.mgmt\.External\.[0-9a-f-]{36}", str(uid))
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == DEVELOPMENT_CN
    assert "DEVELOPMENT" in DEVELOPMENT_CN and "not Apple" in DEVELOPMENT_CN
    assert mode(data / "apns") == 0o700 and mode(data / "apns" / "development-push.key") == 0o600
    topic = read_topic(config)
    assert topic.topic == uid and topic.development and not topic.expired
    # the comments of mdm.toml survive the edit
    text = (data / "mdm.toml").read_text()
    assert 'certificate_file = "apns/development-push.pem"' in text and "# Required before iOS" in text

    before = snapshot(data)
    again = mdm("init", "--data-dir", str(data), env=env)
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith("nothing to do")
    assert snapshot(data) == before
    # --force regenerates the CA but keeps the push identity: enrolled devices keep their topic
    forced = mdm("init", "--data-dir", str(data), "--force", env=env)
    assert forced.returncode == 0, forced.stderr
    after = snapshot(data)
    assert after["apns/development-push.pem"] == before["apns/development-push.pem"]
    assert after["mdm.toml"] == before["mdm.toml"]


def test_apples_certificate_is_not_a_development_identity(tmp_path: Path) -> None:
    data = tmp_path / "d"
    data.mkdir()
    (data / "mdm.toml").write_text(f'hostname = "127.0.0.1"\n[apns]\ncertificate_file = "{PUSH_PEM}"\n')
    topic = read_topic(load_config(data, env={}))
    assert topic.topic == PUSH_TOPIC and not topic.development  # issued by Apple, not self-signed


def test_init_keeps_a_configured_apns_certificate(tmp_path: Path, env: dict[str, str]) -> None:
    data = tmp_path / "d"
    data.mkdir()
    (data / "mdm.toml").write_text(f'hostname = "127.0.0.1"\n[apns]\ncertificate_file = "{PUSH_PEM}"\n')
    output = _init(data, env)
    assert "DEVELOPMENT" not in output
    assert not (data / "apns").exists()
    assert load_config(data, env={}).section(ApnsConfig).certificate_file == str(PUSH_PEM)


def test_init_adds_the_identity_to_an_older_data_directory(tmp_path: Path, env: dict[str, str]) -> None:
    """A directory initialised before this feature (no [apns] table at all) gets one, once."""
    data = tmp_path / "d"
    data.mkdir()
    (data / "mdm.toml").write_text('# mine\nhostname = "127.0.0.1"\n')
    assert "created a DEVELOPMENT push identity" in _init(data, env)
    text = (data / "mdm.toml").read_text()
    assert text.startswith('# mine\nhostname = "127.0.0.1"\n')
    assert read_topic(load_config(data, env={})).development


# ---- host names devices can reach -----------------------------------------------------------------
def test_explicit_hostname_that_does_not_resolve_is_refused(tmp_path: Path, env: dict[str, str]) -> None:
    for args, extra_env, source in (
        (("--hostname", UNRESOLVABLE), {}, "--hostname"),
        ((), {"MDM_HOSTNAME": UNRESOLVABLE}, "MDM_HOSTNAME"),
    ):
        data = tmp_path / source
        r = mdm("init", "--data-dir", str(data), *args, env={**env, **extra_env})
        assert r.returncode == 2, r.stderr
        (line,) = error_lines(r)
        assert line.startswith(
            f"mdm: error: the public host name '{UNRESOLVABLE}' ({source}) does not resolve ("
        )
        assert "--no-resolve-check" in line and line.endswith("Nothing was written")
        assert not data.exists()
        assert not TOKEN_RE.search(r.stdout)


def test_no_resolve_check_accepts_a_name_whose_record_comes_later(
    tmp_path: Path, env: dict[str, str]
) -> None:
    data = tmp_path / "d"
    r = mdm("init", "--data-dir", str(data), "--hostname", UNRESOLVABLE, "--no-resolve-check", env=env)
    assert r.returncode == 0, r.stderr
    assert load_config(data, env={}).hostname == UNRESOLVABLE
    assert "WARNING" not in r.stderr.replace("WARNING: iOS push", "")


@pytest.mark.parametrize("name", ["localhost", "127.0.0.1", "::1"])
def test_loopback_hostname_is_a_loud_warning_not_a_refusal(
    tmp_path: Path, env: dict[str, str], name: str
) -> None:
    data = tmp_path / "d"
    r = mdm("init", "--data-dir", str(data), "--hostname", name, env=env)
    assert r.returncode == 0, r.stderr
    assert TOKEN_RE.search(r.stdout)  # initialised all the same
    assert f"WARNING: the public host name '{name}' (--hostname) is a loopback name" in r.stderr
    assert "Devices cannot reach this server by it" in r.stderr
    assert "mdm init --hostname mdm.example.com" in r.stderr
    assert f'set hostname = "mdm.example.com" in {data / "mdm.toml"}' in r.stderr
    assert "mdm init --reissue-certs" in r.stderr
    # and again on the next run, naming the file as the source
    again = mdm("init", "--data-dir", str(data), env=env)
    assert f"'{name}' (hostname in {data / 'mdm.toml'}) is a loopback name" in again.stderr


def test_fqdn_resolving_only_to_loopback_warns(tmp_path: Path) -> None:
    """A name from /etc/hosts that maps to 127.x (as a fresh box's FQDN often does), through the
    real resolver."""
    names = []
    for line in Path("/etc/hosts").read_text().splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) >= 2 and fields[0].startswith("127."):
            names += [n for n in fields[1:] if n != "localhost" and not n.endswith(".localhost")]
    candidates = [n for n in names if set(hostcheck.resolve(n)[0]) <= {"127.0.0.1", "127.0.1.1", "::1"}
                  and hostcheck.resolve(n)[0]]
    if not candidates:
        pytest.skip("no /etc/hosts name that resolves only to loopback here")
    verdict = hostcheck.check(candidates[0])
    assert verdict.loopback and verdict.unresolved is None
    lines = hostcheck.warning_lines(verdict, "this host's FQDN", tmp_path)
    assert f"'{candidates[0]}' (this host's FQDN) is a loopback name (resolves to 127." in lines[1]


def test_reachable_address_gives_no_warning(tmp_path: Path) -> None:
    verdict = hostcheck.check("192.0.2.10")
    assert not verdict.loopback and verdict.unresolved is None
    assert hostcheck.warning_lines(verdict, "--hostname", tmp_path) == []
    assert hostcheck.check(UNRESOLVABLE).unresolved


def test_reissue_certs_follows_a_new_hostname_and_keeps_ca_and_token(
    tmp_path: Path, env: dict[str, str]
) -> None:
    data = tmp_path / "d"
    first = mdm("init", "--data-dir", str(data), "--hostname", "localhost", env=env)
    assert first.returncode == 0, first.stderr
    toml = data / "mdm.toml"
    toml.write_text(toml.read_text().replace('hostname = "localhost"', 'hostname = "192.0.2.10"'))
    before = snapshot(data)
    r = mdm("init", "--data-dir", str(data), "--reissue-certs", env=env)
    assert r.returncode == 0, r.stderr
    after = snapshot(data)
    for name in ("ca/root.pem", "ca/root.key", "ca/issuing.key", "mdm.toml", "apns/development-push.pem"):
        assert after[name] == before[name], name
    assert after["certs/ios.pem"] != before["certs/ios.pem"]
    assert not TOKEN_RE.search(r.stdout)  # the admin token stays
    cert = x509.load_pem_x509_certificate((data / "certs" / "ios.pem").read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "192.0.2.10" in [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)]
    assert "loopback" not in r.stderr


# ---- a lost admin token ---------------------------------------------------------------------------
async def _principal(url: str, token: str) -> tokens.Principal | None:
    db = Database(url)
    try:
        async with db.session() as session:
            return await tokens.authenticate(session, token)
    finally:
        await db.close()


async def _token_rows(url: str) -> list[tuple[str, bytes, str]]:
    from sqlalchemy import select

    from mdm.db.models import ApiToken

    db = Database(url)
    try:
        async with db.session() as session:
            rows = await session.execute(
                select(ApiToken.name, ApiToken.secret_hash, ApiToken.scopes).order_by(ApiToken.name)
            )
            return [tuple(r) for r in rows]  # type: ignore[misc]
    finally:
        await db.close()


def test_tokens_create_local_mints_a_token_without_the_ca(tmp_path: Path, env: dict[str, str]) -> None:
    data = tmp_path / "d"
    _init(data, env)
    url = _url(env, data)
    ca_before = {k: v for k, v in snapshot(data).items() if k.startswith(("ca/", "certs/", "apns/"))}
    r = mdm("tokens", "create", "--local", "rescue", "--scope", "admin", "--data-dir", str(data), env=env)
    assert r.returncode == 0, r.stderr
    (token,) = TOKEN_RE.findall(r.stdout)
    assert "shown once" in r.stdout
    principal = asyncio.run(_principal(url, token))
    assert principal is not None and principal.name == "rescue" and principal.allows("pki")
    assert {k: v for k, v in snapshot(data).items() if k.startswith(("ca/", "certs/", "apns/"))} == ca_before
    for path in data.rglob("*"):
        if path.is_file():
            assert token.encode() not in path.read_bytes(), path

    # scoped, several scopes, JSON
    r = mdm("tokens", "create", "--local", "ci", "--scope", "devices:read", "--scope", "events:read",
            "--json", "--data-dir", str(data), env=env)
    assert r.returncode == 0, r.stderr
    assert '"scopes": [\n    "devices:read",\n    "events:read"\n  ]' in r.stdout


def test_tokens_create_local_refuses_bad_input_and_changes_nothing(
    tmp_path: Path, env: dict[str, str]
) -> None:
    data = tmp_path / "d"
    _init(data, env)
    url = _url(env, data)
    rows = asyncio.run(_token_rows(url))
    assert [r[0] for r in rows] == ["admin"]
    cases = [
        (("admin", "--scope", "admin"), 1,
         "mdm: error: a token named 'admin' already exists; nothing was changed."),
        (("x", "--scope", "everything"), 2, "mdm: error: unknown scope(s): everything (allowed: admin, "),
        (("bad name", "--scope", "admin"), 2, "mdm: error: token name 'bad name': 1-255 letters"),
        (("x", "--scope", "admin", "--url", "https://127.0.0.1:1"), 2,
         "mdm: error: --local works on the data directory: --url and --token do not apply"),
    ]
    for args, code, start in cases:
        r = mdm("tokens", "create", "--local", *args, "--data-dir", str(data), env=env)
        assert r.returncode == code, (args, r.stderr)
        (line,) = error_lines(r)
        assert line.startswith(start), line
        assert not TOKEN_RE.search(r.stdout)
    assert asyncio.run(_token_rows(url)) == rows


def test_tokens_create_local_without_a_data_directory(tmp_path: Path) -> None:
    r = mdm("tokens", "create", "--local", "x", "--scope", "admin", "--data-dir", str(tmp_path / "none"),
            env=base_env())
    assert r.returncode == 2
    assert error_lines(r) == [
        f"mdm: error: {tmp_path / 'none' / 'mdm.toml'} does not exist; "
        f"run `mdm init --data-dir {tmp_path / 'none'}` first"
    ]
    # a configuration but no database yet: said, and no empty database file left behind
    data = tmp_path / "configured"
    data.mkdir()
    (data / "mdm.toml").write_text('hostname = "127.0.0.1"\n')
    r = mdm("tokens", "create", "--local", "x", "--scope", "admin", "--data-dir", str(data), env=base_env())
    assert r.returncode == 1
    assert error_lines(r) == [f"mdm: error: no database in {data}: run `mdm init --data-dir {data}` first"]
    assert sorted(p.name for p in data.iterdir()) == ["mdm.toml"]


def test_tokens_create_local_on_a_database_without_the_schema(tmp_path: Path, env: dict[str, str]) -> None:
    data = tmp_path / "d"
    data.mkdir()
    (data / "mdm.toml").write_text('hostname = "127.0.0.1"\n')
    if not PG_URL:
        (data / "mdm.sqlite3").write_bytes(b"")  # an empty SQLite file: no tables
    else:  # a database of its own, empty (the shared test database keeps its schema)
        from conftest import _ensure_pg_database
        from sqlalchemy import text
        from sqlalchemy.engine import make_url

        url = make_url(PG_URL)
        empty = url.set(database=f"{url.database}_noschema").render_as_string(hide_password=False)

        async def fresh() -> None:
            await _ensure_pg_database(empty)
            db = Database(empty)
            try:
                async with db.engine.begin() as conn:
                    await conn.execute(text("DROP SCHEMA public CASCADE"))
                    await conn.execute(text("CREATE SCHEMA public"))
            finally:
                await db.close()

        asyncio.run(fresh())
        env = {**env, "MDM_DATABASE_URL": empty}
    r = mdm("tokens", "create", "--local", "x", "--scope", "admin", "--data-dir", str(data), env=env)
    assert r.returncode == 1, r.stderr
    (line,) = error_lines(r)
    assert line.startswith("mdm: error: cannot write the token to the database (")
    assert line.endswith(f"has `mdm init` run for {data}?")


# ---- the way to Apple's certificate ---------------------------------------------------------------
def test_push_apns_csr_writes_a_private_key_and_a_csr(tmp_path: Path) -> None:
    out = tmp_path / "push.csr"
    r = mdm("push", "apns", "csr", "--out", str(out), "--email", "it@example.com", env=base_env())
    assert r.returncode == 0, r.stderr
    key_file = tmp_path / "push.key"
    assert mode(key_file) == 0o600
    csr = x509.load_pem_x509_csr(out.read_bytes())
    assert csr.is_signature_valid
    assert isinstance(csr.public_key(), rsa.RSAPublicKey) and csr.public_key().key_size == 2048
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(key_file.read_bytes(), None)
    assert key.public_key().public_numbers() == csr.public_key().public_numbers()  # type: ignore[union-attr]
    assert "identity.apple.com/pushcert" in r.stdout and "mdm push apns set-cert" in r.stdout

    before = snapshot(tmp_path)
    again = mdm("push", "apns", "csr", "--out", str(out), env=base_env())
    assert again.returncode == 2
    assert error_lines(again) == [f"mdm: error: {out} exists; nothing was written (--force overwrites it)"]
    assert snapshot(tmp_path) == before
    bad = mdm("push", "apns", "csr", "--out", str(tmp_path / "x.csr"), "--email", "nobody", env=base_env())
    assert bad.returncode == 2 and not (tmp_path / "x.csr").exists() and not (tmp_path / "x.key").exists()
    forced = mdm("push", "apns", "csr", "--out", str(out), "--force", env=base_env())
    assert forced.returncode == 0 and snapshot(tmp_path)["push.key"] != before["push.key"]
    assert os.path.exists(out)
