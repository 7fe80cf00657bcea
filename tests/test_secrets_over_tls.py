"""Secrets only over TLS, and only to whom they belong.

Enrollment profiles (a PKCS#12 and its password) are refused on the web listener's plain-HTTP
port, without consuming the link, unless the TCP peer is a trusted proxy
(``listeners.web.trusted_proxies``; the test configuration trusts 127.0.0.2) that says it
terminated TLS. Links point at HTTPS. ``/metrics`` needs the ``metrics:read`` scope (or ``admin``)
or a peer in ``api.metrics_allow``.

The "proxy" is a client bound to 127.0.0.2: a real TCP peer address, as the server sees it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from conftest import client_ssl_context, listener_url
from enroll_support import APNS_TOML
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

from mdm.config import Config, ConfigError
from mdm.config_sections import load as load_config
from mdm.core import tokens
from mdm.db.engine import Database
from mdm.db.models import Event
from mdm.enroll import links
from mdm.pki.tables import IssuedCertificateRecord
from mdm.server.runtime import Server
from mdm.testing import make_data_dir

PROXY = "127.0.0.2"  # in listeners.web.trusted_proxies of the test configuration
PROFILE_TYPE = "application/x-apple-aspen-config"


@pytest.fixture
def extra_config() -> str:
    return APNS_TOML + f'\n[api]\nmetrics_allow = ["{PROXY}/32"]\n'


def _client(*, local_address: str | None = None, **kwargs: Any) -> httpx.AsyncClient:
    transport = httpx.AsyncHTTPTransport(local_address=local_address, verify=kwargs.pop("verify", True))
    return httpx.AsyncClient(transport=transport, timeout=60, **kwargs)


async def _link(api: httpx.AsyncClient, user: str = "alice") -> str:
    r = await api.post("/api/v1/enrollments", json={"platform": "ios", "user": user})
    assert r.status_code == 201, r.text
    return str(r.json()["url"])


def _path(link: str) -> str:
    return urlsplit(link).path


async def _downloads(db: Database) -> tuple[int, int]:
    """(enrollment_downloaded events, mobile certificates issued)."""
    async with db.session() as session:
        events = await session.scalar(
            select(func.count()).select_from(Event).where(Event.type == "enrollment_downloaded")
        )
        certs = await session.scalar(
            select(func.count())
            .select_from(IssuedCertificateRecord)
            .where(IssuedCertificateRecord.type == "mobile")
        )
    return int(events or 0), int(certs or 0)


# ---- enrollment profiles ------------------------------------------------------------------------
async def test_links_point_at_the_https_port(api: httpx.AsyncClient, server: Server) -> None:
    url = urlsplit(await _link(api))
    assert url.scheme == "https"
    assert url.port == urlsplit(listener_url(server, "web", tls=True)).port


async def test_plain_http_is_refused_and_the_link_survives(
    api: httpx.AsyncClient, server: Server, config: Config, db: Database
) -> None:
    link = await _link(api)
    plain = listener_url(server, "web", tls=False) + _path(link)
    async with _client() as client:
        for _ in range(2):
            r = await client.get(plain)
            assert r.status_code == 403, r.text
            assert r.headers["content-type"].startswith("text/plain")
            assert "only served over HTTPS" in r.text
            assert r.headers["Cache-Control"] == "no-store"
            token = _path(link).removeprefix("/e/")
            assert token not in r.text  # the secret is not echoed back over plain HTTP
            assert urlsplit(link).netloc in r.text and "https://" in r.text
        # Someone who is not a trusted proxy cannot claim TLS.
        for headers in ({"X-Forwarded-Proto": "https"}, {"Forwarded": "for=10.0.0.9;proto=https"}):
            assert (await client.get(plain, headers=headers)).status_code == 403
    assert await _downloads(db) == (0, 0)
    # The same link still works over HTTPS, once.
    async with _client(verify=client_ssl_context(config)) as client:
        https = listener_url(server, "web", tls=True) + _path(link)
        r = await client.get(https)
        assert r.status_code == 200 and r.headers["content-type"] == PROFILE_TYPE
        assert (await client.get(https)).status_code == 410
    assert await _downloads(db) == (1, 1)


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-Forwarded-Proto": "http"},
        {"Forwarded": "proto=http"},
        {"Forwarded": "for=10.0.0.9;proto=https, for=10.0.0.1;proto=http"},  # the nearest hop is http
        {"X-Forwarded-Proto": "https, http"},
        {"X-Forwarded-Proto": "https", "Forwarded": "proto=http"},  # they disagree
        {"Forwarded": "for=10.0.0.9"},  # no proto at all
    ],
)
async def test_trusted_proxy_without_tls_is_refused(
    api: httpx.AsyncClient, server: Server, db: Database, headers: dict[str, str]
) -> None:
    link = await _link(api)
    async with _client(local_address=PROXY) as proxy:
        r = await proxy.get(listener_url(server, "web", tls=False) + _path(link), headers=headers)
    assert r.status_code == 403, r.text
    assert await _downloads(db) == (0, 0)


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Forwarded-Proto": "https"},
        {"X-Forwarded-Proto": "HTTPS"},
        {"Forwarded": 'for="[2001:db8::1]";proto=https'},
        {"Forwarded": "for=10.0.0.1;proto=http, for=10.0.0.9;proto=https"},  # the nearest hop is https
        {"X-Forwarded-Proto": "https", "Forwarded": "proto=https"},
    ],
)
async def test_trusted_proxy_that_terminated_tls_is_served(
    api: httpx.AsyncClient, server: Server, db: Database, headers: dict[str, str]
) -> None:
    link = await _link(api)
    async with _client(local_address=PROXY) as proxy:
        r = await proxy.get(listener_url(server, "web", tls=False) + _path(link), headers=headers)
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == PROFILE_TYPE
        again = await proxy.get(listener_url(server, "web", tls=False) + _path(link), headers=headers)
        assert again.status_code == 410
    assert await _downloads(db) == (1, 1)


def test_http_only_web_listener_links_still_point_at_https(
    tmp_path: Path, pki_template: Path, database_url: str
) -> None:
    config = make_data_dir(tmp_path / "d", pki_template, database_url)
    web = config.listeners.web
    web.https_enabled = False
    web.http_port = 8060
    # Only plain HTTP here: a TLS-terminating proxy publishes it, at https://HOST by default.
    assert links.link_url(config, "T" * 43) == "https://localhost/e/" + "T" * 43


def test_link_base_url_must_be_https(tmp_path: Path, pki_template: Path, database_url: str) -> None:
    make_data_dir(tmp_path / "d", pki_template, database_url)
    toml = tmp_path / "d" / "mdm.toml"
    toml.write_text(toml.read_text() + '\n[enroll]\nlink_base_url = "http://mdm.example.com:8060"\n')
    with pytest.raises(ConfigError, match=r"enroll\.link_base_url: devices only accept https://"):
        load_config(tmp_path / "d", env={})


# ---- /metrics -----------------------------------------------------------------------------------
async def _token(db: Database, name: str, scopes: list[str]) -> str:
    async with db.transaction() as session:
        _, token = await tokens.create(session, name, scopes)
    return token


async def test_metrics_needs_a_scope(server: Server, config: Config, db: Database) -> None:
    url = listener_url(server, "admin") + "/metrics"
    reader = await _token(db, "prometheus", ["metrics:read"])
    admin = await _token(db, "root", ["admin"])
    other = await _token(db, "devices-reader", ["devices:read"])
    async with _client(verify=client_ssl_context(config)) as client:
        r = await client.get(url)
        assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Bearer")
        assert "mdm_http_requests_total" not in r.text
        r = await client.get(url, headers={"Authorization": "Bearer not-a-token-at-all-but-long"})
        assert r.status_code == 401
        r = await client.get(url, headers={"Authorization": f"Bearer {other}"})
        assert r.status_code == 403 and r.json()["error"]["details"]["required"] == "metrics:read"
        for token in (reader, admin):
            r = await client.get(url, headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 200, r.text
            names = {f.name for f in text_string_to_metric_families(r.text)}
            assert "mdm_http_requests" in names and "mdm_devices" in names
        # The token with only this scope reaches nothing else.
        r = await client.get(listener_url(server, "admin") + "/api/v1/devices",
                             headers={"Authorization": f"Bearer {reader}"})
        assert r.status_code == 403


async def test_metrics_from_an_allow_listed_peer_needs_no_token(server: Server, config: Config) -> None:
    url = listener_url(server, "admin") + "/metrics"
    async with _client(local_address=PROXY, verify=client_ssl_context(config)) as scraper:
        r = await scraper.get(url)
        assert r.status_code == 200, r.text
        assert "mdm_http_requests_total" in r.text
        # The allow-list opens /metrics only.
        assert (await scraper.get(listener_url(server, "admin") + "/api/v1/devices")).status_code == 401
    async with _client(local_address="127.0.0.3", verify=client_ssl_context(config)) as stranger:
        assert (await stranger.get(url)).status_code == 401


def test_metrics_allow_is_validated(tmp_path: Path, pki_template: Path, database_url: str) -> None:
    make_data_dir(tmp_path / "d", pki_template, database_url)
    toml = tmp_path / "d" / "mdm.toml"
    toml.write_text(toml.read_text() + '\n[api]\nmetrics_allow = ["prometheus.local"]\n')
    with pytest.raises(ConfigError, match=r"api\.metrics_allow: 'prometheus.local' is not an IP"):
        load_config(tmp_path / "d", env={})


def test_metrics_scope_is_documented() -> None:
    from mdm.api.plugin import openapi
    from mdm.plugins import ADMIN_API

    op = openapi(ADMIN_API)["paths"]["/metrics"]["get"]
    assert "security" not in op  # the document-wide bearer requirement applies
    assert "`metrics:read`" in op["description"] and "api.metrics_allow" in op["description"]
    assert {"401", "403"} <= set(op["responses"])
