"""Configuration: the file, the §11 environment overrides, and validation messages that name the
key, what was wrong and what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ConfigDict, Field

from mdm import config_load
from mdm.config import CONFIG_FILE, CONFIG_TEMPLATE, Config, ConfigError, Section, Sections
from mdm.config_load import load_config as load_core
from mdm.config_sections import load as load_config
from mdm.ios.config import IosConfig
from mdm.server.runtime import StartupError, bindings


def write(directory: Path, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / CONFIG_FILE).write_text(text)
    return directory


@pytest.mark.parametrize(
    ("var", "value", "read", "expected"),
    [
        (
            "MDM_DATABASE_URL",
            "postgresql+asyncpg://mdm@db:5432/mdm",
            lambda c: c.database_url,
            "postgresql+asyncpg://mdm@db:5432/mdm",
        ),
        ("MDM_HOSTNAME", "mdm.example.com", lambda c: c.hostname, "mdm.example.com"),
        ("MDM_IOS_PORT", "8443", lambda c: c.listeners.ios.port, 8443),
        ("MDM_KES_PORT", "23292", lambda c: c.listeners.kes.port, 23292),
        ("MDM_WEB_HTTP_PORT", "9060", lambda c: c.listeners.web.http_port, 9060),
        ("MDM_WEB_HTTPS_PORT", "9061", lambda c: c.listeners.web.https_port, 9061),
        ("MDM_ADMIN_PORT", "23299", lambda c: c.listeners.admin.port, 23299),
        ("MDM_LOG_JSON", "true", lambda c: c.logging.json_lines, True),
        ("MDM_LOG_LEVEL", "debug", lambda c: c.logging.level, "DEBUG"),
        ("MDM_CA_PASSPHRASE", "correct horse", lambda c: c.ca_passphrase(), b"correct horse"),
    ],
)
def test_environment_overrides_file(tmp_path: Path, var: str, value: str, read, expected) -> None:
    data = write(
        tmp_path,
        CONFIG_TEMPLATE.format(
            hostname="file.example.com",
            database_url="",
            ios_port=1443,
            kes_port=1292,
            web_http_port=1060,
            web_https_port=1061,
            admin_port=1299,
        ),
    )
    baseline = load_config(data, env={})
    assert read(baseline) != expected
    assert read(load_config(data, env={var: value})) == expected
    assert read(load_config(data, env={var: ""})) == read(baseline)  # empty means unset


def test_every_contract_variable_is_covered() -> None:
    # MDM_DATA_DIR selects the directory and MDM_ADMIN_TOKEN is read by `mdm init` (test_cli_init_serve).
    contract = {
        "MDM_DATA_DIR",
        "MDM_DATABASE_URL",
        "MDM_HOSTNAME",
        "MDM_IOS_PORT",
        "MDM_KES_PORT",
        "MDM_WEB_HTTP_PORT",
        "MDM_WEB_HTTPS_PORT",
        "MDM_ADMIN_PORT",
        "MDM_ADMIN_TOKEN",
    }
    assert contract - {"MDM_DATA_DIR", "MDM_ADMIN_TOKEN"} <= set(config_load.ENV_OVERRIDES)


def test_data_dir_from_environment(tmp_path: Path) -> None:
    data = write(tmp_path / "elsewhere", 'hostname = "from-file.example"\n')
    config = load_config(None, env={"MDM_DATA_DIR": str(data)})
    assert config.data_path == data and config.hostname == "from-file.example"
    assert config.database_url == f"sqlite+aiosqlite:///{data / 'mdm.sqlite3'}"
    assert config.ca_dir == data / "ca"
    # an explicit --data-dir wins over the environment
    other = write(tmp_path / "explicit", 'hostname = "explicit.example"\n')
    assert load_config(other, env={"MDM_DATA_DIR": str(data)}).hostname == "explicit.example"


def test_defaults_follow_the_reference_product(tmp_path: Path) -> None:
    c = load_config(tmp_path, env={})
    assert (
        c.listeners.ios.port,
        c.listeners.kes.port,
        c.listeners.web.http_port,
        c.listeners.web.https_port,
        c.listeners.admin.port,
    ) == (443, 13292, 8060, 8061, 13299)
    assert c.database.url == "" and c.database_url.startswith("sqlite+aiosqlite:///")


def test_template_written_by_init_is_valid_and_commented(tmp_path: Path) -> None:
    text = CONFIG_TEMPLATE.format(
        hostname="h.example",
        database_url="",
        ios_port=443,
        kes_port=13292,
        web_http_port=8060,
        web_https_port=8061,
        admin_port=13299,
    )
    assert sum(1 for line in text.splitlines() if line.lstrip().startswith("#")) >= 5
    c = load_config(write(tmp_path, text), env={})
    assert c.hostname == "h.example" and c.listeners.admin.port == 13299


@pytest.mark.parametrize(
    ("toml", "env", "fragments"),
    [
        ("[listeners.admin]\nport = 70000\n", {}, ["listeners.admin.port:", "between 1 and 65535", "70000"]),
        (
            "",
            {"MDM_ADMIN_PORT": "abc"},
            ["listeners.admin.port (set by MDM_ADMIN_PORT):", "valid integer", "'abc'"],
        ),
        ("", {"MDM_KES_PORT": "-1"}, ["listeners.kes.port (set by MDM_KES_PORT):", "between 1 and 65535"]),
        (
            '[logging]\nlevel = "LOUD"\n',
            {},
            ["logging.level:", "'DEBUG', 'INFO', 'WARNING' or 'ERROR'", "LOUD"],
        ),
        ("", {"MDM_LOG_JSON": "maybe"}, ["logging.json (set by MDM_LOG_JSON):", "valid boolean", "'maybe'"]),
        (
            "",
            {"MDM_DATABASE_URL": "mysql://x"},
            ["database.url (set by MDM_DATABASE_URL):", "postgresql+asyncpg://"],
        ),
        ('[listeners.ios]\nmode = "proxy"\n', {}, ["listeners.ios.mode:", "'tls' or 'plain'", "proxy"]),
        (
            '[database]\nurl = "mysql://x"\n',
            {},
            ["database.url:", "sqlite+aiosqlite://", "postgresql+asyncpg://"],
        ),
        ("[database]\npool_size = 0\n", {}, ["database.pool_size:", "greater than or equal to 1"]),
        ('[pki]\nkey_type = "dsa"\n', {}, ["pki.key_type:", "'rsa' or 'ec'"]),
        ("[pki]\nrsa_bits = 1024\n", {}, ["pki.rsa_bits:", "greater than or equal to 2048"]),
        (
            '[listeners.kes]\ntrusted_proxies = ["10.0.0.300"]\n',
            {},
            ["listeners.kes.trusted_proxies", "not an IP"],
        ),
        ('hostname = "bad name"\n', {}, ["hostname:", "DNS name or IP address"]),
        ("[limits]\nmax_body_bytes = 10\n", {}, ["limits.max_body_bytes:", "greater than or equal to 1024"]),
        ("colour = 1\n", {}, ["colour: unknown key"]),
        (
            "[listeners.admin]\nprot = 13299\n",
            {},
            ["listeners.admin.prot: unknown key", "check the spelling"],
        ),
        ("[listeners.vpn]\nport = 1\n", {}, ["listeners.vpn: unknown key"]),
        ('listeners = "all"\n', {}, ["listeners:", "valid dictionary"]),
    ],
)
def test_validation_names_key_and_allowed_values(
    tmp_path: Path, toml: str, env: dict[str, str], fragments: list[str]
) -> None:
    data = write(tmp_path, toml)
    with pytest.raises(ConfigError) as info:
        load_config(data, env=env)
    message = str(info.value)
    assert "\n" not in message
    assert str(data / CONFIG_FILE) in message
    for fragment in fragments:
        assert fragment in message, message


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    data = write(tmp_path, '[listeners.admin]\nport = 70000\n[logging]\nlevel = "LOUD"\n')
    with pytest.raises(ConfigError) as info:
        load_config(data, env={})
    assert "listeners.admin.port" in str(info.value) and "logging.level" in str(info.value)


def test_broken_and_unreadable_files(tmp_path: Path) -> None:
    data = write(tmp_path / "broken", "[listeners.admin\nport = 1\n")
    with pytest.raises(ConfigError, match=r"mdm\.toml: not valid TOML: .*line 1"):
        load_config(data, env={})
    with pytest.raises(ConfigError, match=r"does not exist; run `mdm init --data-dir .*` first"):
        load_config(tmp_path / "missing", env={}, require_file=True)
    data = write(tmp_path / "pp", f'[pki]\npassphrase_file = "{tmp_path / "nope"}"\n')
    with pytest.raises(ConfigError, match=r"^pki\.passphrase_file: cannot read .*nope: No such file"):
        load_config(data, env={}).ca_passphrase()


def test_passphrase_file_wins(tmp_path: Path) -> None:
    secret = tmp_path / "pass"
    secret.write_text("from-file\n")
    data = write(tmp_path / "d", f'[pki]\npassphrase_file = "{secret}"\n')
    assert load_config(data, env={"MDM_CA_PASSPHRASE": "from-env"}).ca_passphrase() == b"from-file"


def test_same_port_twice_is_refused_at_start(tmp_path: Path) -> None:
    data = write(tmp_path, "[listeners.ios]\nport = 9443\n")
    config = load_config(data, env={"MDM_ADMIN_PORT": "9443"})
    with pytest.raises(StartupError) as info:
        bindings(config)
    assert str(info.value) == (
        "port 9443 is configured twice (listeners.ios.port and listeners.admin.port); "
        "give each listener its own port"
    )
    # disabled listeners do not count, and port 0 (ephemeral) may repeat
    config = load_config(
        write(tmp_path / "b", "[listeners.ios]\nenabled = false\nport = 9443\n"),
        env={"MDM_ADMIN_PORT": "9443"},
    )
    assert [b.listener for b in bindings(config)] == ["kes", "admin", "web", "web"]


class _Feature(Section):
    model_config = ConfigDict(extra="forbid")
    name = "feature_x"
    interval_seconds: int = Field(default=30, ge=1)


def test_feature_sections_are_validated_with_their_prefix(tmp_path: Path) -> None:
    sections = Sections(_Feature)

    def load(path: Path) -> Config:
        return load_core(path, env={}, sections=sections)

    ok = load(write(tmp_path / "ok", "[feature_x]\ninterval_seconds = 5\n"))
    assert ok.section(_Feature).interval_seconds == 5
    assert load(write(tmp_path / "default", "")).section(_Feature).interval_seconds == 30
    with pytest.raises(
        ConfigError, match=r"feature_x\.interval_seconds: Input should be greater than or equal to 1"
    ):
        load(write(tmp_path / "bad", "[feature_x]\ninterval_seconds = 0\n"))
    with pytest.raises(ConfigError, match=r"feature_x\.intervall: unknown key"):
        load(write(tmp_path / "typo", "[feature_x]\nintervall = 5\n"))
    # Without the registry handed in, the table is not a known key: nothing is registered globally.
    with pytest.raises(ConfigError, match=r"feature_x: unknown key"):
        load_core(write(tmp_path / "alone", "[feature_x]\ninterval_seconds = 5\n"), env={})


def test_a_section_is_declared_once() -> None:
    with pytest.raises(ValueError, match="declared twice"):
        Sections(_Feature, _Feature)


def test_feature_sections_load_without_the_server(tmp_path) -> None:
    """The CLI loads the config without importing the server; feature sections must still be known."""
    import subprocess
    import sys

    (tmp_path / "mdm.toml").write_text(
        '[smtp]\nhost = "127.0.0.1"\nfrom = "mdm@example.com"\n[apns]\ncertificate_file = ""\n'
        "[scep]\nenabled = true\n[ios]\n[ios_commands]\nsign_profiles = true\n[enroll]\n"
    )
    code = (
        "import sys; from mdm.config_sections import load; c = load(sys.argv[1]);"
        "assert 'mdm.server.runtime' not in sys.modules, 'config loading imported the server';"
        "print(c.extensions['smtp'].host, c.extensions['ios_commands'].sign_profiles)"
    )
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["127.0.0.1", "True"]


def test_notnow_back_off_cannot_be_zero(tmp_path: Path) -> None:
    """A zero back-off offered a NotNow'd command again within the exchange that refused it."""
    for key in ("notnow_backoff_seconds", "notnow_backoff_max_seconds"):
        with pytest.raises(ConfigError, match=rf"ios\.{key}: Input should be greater than or equal to 1"):
            load_config(write(tmp_path / key, f"[ios]\n{key} = 0\n"), env={})
    ok = load_config(write(tmp_path / "ok", "[ios]\nnotnow_backoff_seconds = 1\n"), env={})
    assert ok.section(IosConfig).notnow_backoff_seconds == 1


def test_a_listener_section_without_a_port_keeps_its_own_default(tmp_path: Path) -> None:
    """`[listeners.admin]` that only sets the mode must not move the admin API to 443 (the
    generic listener default) and collide with the iOS listener."""
    write(tmp_path, '[listeners.admin]\nmode = "plain"\n\n[listeners.kes]\nenabled = false\n')
    c = load_config(tmp_path, env={})
    assert (c.listeners.admin.mode, c.listeners.admin.port) == ("plain", 13299)
    assert (c.listeners.kes.enabled, c.listeners.kes.port) == (False, 13292)
    assert c.listeners.ios.port == 443


@pytest.mark.parametrize("listener", ["ios", "kes", "web"])
def test_kcd_without_a_trusted_proxy_is_refused(tmp_path: Path, listener: str) -> None:
    """Negotiate is believed only from trusted proxies: kcd alone would refuse every device."""
    data = tmp_path / "data"
    data.mkdir()
    (data / CONFIG_FILE).write_text(f"[listeners.{listener}]\nkcd = true\n")
    with pytest.raises(ConfigError, match="kcd = true needs trusted_proxies"):
        load_config(None, env={"MDM_DATA_DIR": str(data)})
    proxied = f'[listeners.{listener}]\nkcd = true\ntrusted_proxies = ["10.0.0.5/32"]\n'
    (data / CONFIG_FILE).write_text(proxied)
    assert load_config(None, env={"MDM_DATA_DIR": str(data)}).listeners.model_dump()[listener]["kcd"] is True
