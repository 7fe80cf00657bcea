"""The WSMan/PSRP Exchange fake, driven by plain pypsrp against a real MIT KDC (tests/kdc.py)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gssapi
import pytest
import requests
import spnego
from pypsrp.complex_objects import PSInvocationState
from pypsrp.exceptions import WinRMTransportError, WSManFaultError
from pypsrp.powershell import PowerShell, RunspacePool
from pypsrp.wsman import WSMan
from spnego._gss import GSSAPIProxy

from mdm.devfakes.exchange_org import Organisation, SessionState
from mdm.devfakes.exchange_psrp import ExchangePsrpFake
from mdm.eas.cmdlets import REQUIRED_CMDLETS
from tests.engines import ENGINE_FREE
from tests.kdc import Kdc, kdc_fixture, krb5_ccache_fixture  # noqa: F401  (fixtures)

pytestmark = ENGINE_FREE

DOMAINS = ("corp.example.com", "branch.example.com")
HOSTILE = "a'; Remove-Mailbox * #$(whoami)"


@pytest.fixture
def org(kdc: Kdc) -> Organisation:
    org = Organisation.generate(mailboxes=6, devices=8, domains=DOMAINS)
    org.permissions = {kdc.svc_principal: set(REQUIRED_CMDLETS), kdc.nobody_principal: set()}
    return org


@pytest.fixture(params=["https", "http"])
def fake(request: pytest.FixtureRequest, kdc: Kdc, krb5_ccache: Path,
         org: Organisation) -> Iterator[ExchangePsrpFake]:
    with ExchangePsrpFake(org, keytab=kdc.service_keytab, tls=request.param == "https") as fake:
        yield fake


@pytest.fixture
def https_fake(kdc: Kdc, krb5_ccache: Path, org: Organisation) -> Iterator[ExchangePsrpFake]:
    with ExchangePsrpFake(org, keytab=kdc.service_keytab, tls=True) as fake:
        yield fake


_OPEN: list[WSMan] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while _OPEN:
        _OPEN.pop().close()


def connect(fake: ExchangePsrpFake, kdc: Kdc, *, user: str | None = None,
            password: str | None = None, timeout: int = 5) -> WSMan:
    """A pypsrp client as the EAS runner builds one (closed after the test)."""
    tls = fake.url.startswith("https")
    wsman = WSMan(kdc.host, port=fake.port, ssl=tls, path="PowerShell", auth="kerberos",
                  username=user or kdc.svc_principal, password=password or kdc.svc_password,
                  # pypsrp's annotation says bool; a CA file path is what requests' verify takes
                  cert_validation=str(fake.ca_file) if tls else False,  # type: ignore[arg-type]
                  negotiate_service="HTTP", operation_timeout=timeout, read_timeout=timeout + 5)
    _OPEN.append(wsman)
    return wsman


def run(pool: RunspacePool, *statements: tuple[str, dict[str, Any]]) -> PowerShell:
    ps = PowerShell(pool)
    for i, (name, params) in enumerate(statements):
        if i:
            ps.add_statement()
        ps.add_cmdlet(name)
        for key, value in params.items():
            ps.add_parameter(key, value)
    ps.invoke()
    return ps


def test_kdc_issues_tickets_for_the_service_and_goes_down(kdc: Kdc, krb5_ccache: Path) -> None:
    client = spnego.client(kdc.svc_principal, kdc.svc_password, hostname=kdc.host, service="HTTP",
                           protocol="kerberos")
    creds = gssapi.Credentials(usage="accept", store={"keytab": str(kdc.service_keytab)})
    server = GSSAPIProxy(usage="accept", protocol="kerberos", _gssapi_credential=creds)
    client.step(server.step(client.step()))
    assert server.complete and client.complete
    assert server.client_principal == kdc.svc_principal

    kdc.stop_kdc()
    with pytest.raises(Exception, match="Cannot contact any KDC"):
        spnego.client(kdc.nobody_principal, kdc.nobody_password, hostname=kdc.host,
                      service="HTTP", protocol="kerberos").step()
    kdc.start_kdc()
    with pytest.raises(Exception, match=r"integrity|Preauthentication"):
        spnego.client(kdc.nobody_principal, "wrong", hostname=kdc.host, service="HTTP",
                      protocol="kerberos").step()


def test_cmdlet_output_arrives_as_typed_objects(fake: ExchangePsrpFake, kdc: Kdc,
                                                org: Organisation) -> None:
    expected = org.execute("Get-CASMailbox", {"ResultSize": "Unlimited"},
                           principal=kdc.svc_principal, session=SessionState())
    org.calls.clear()
    with RunspacePool(connect(fake, kdc), configuration_name="Microsoft.Exchange") as pool:
        ps = run(pool, ("Get-CASMailbox", {"ResultSize": "Unlimited"}))
        assert not ps.had_errors and ps.state == PSInvocationState.COMPLETED
        assert ps.output, "no mailboxes"
        first = ps.output[0]
        assert first.types[0] == "Microsoft.Exchange.Data.Directory.Management.CASMailbox"
        props = first.adapted_properties
        assert props["ActiveSyncEnabled"] is True
        assert props["PrimarySmtpAddress"].endswith("@" + DOMAINS[0])
        assert first.to_string == props["Identity"]
        assert all(o.adapted_properties["PrimarySmtpAddress"].endswith("@" + DOMAINS[0])
                   for o in ps.output)
        assert len(ps.output) == len(expected)

        devices = run(pool, ("Get-MobileDeviceStatistics", {"Mailbox": props["Identity"]}))
        assert not devices.had_errors
        for device in devices.output:
            stats = device.adapted_properties
            entry = org.device(stats["Identity"])
            assert entry is not None and entry.last_success_sync is not None
            # DateTime travels as <DT>; pypsrp's stock serializer shows its text.
            assert str(stats["LastSuccessSync"]).startswith(
                entry.last_success_sync.strftime("%Y-%m-%dT%H:%M:%S"))
    assert [c.principal for c in org.calls] == [kdc.svc_principal] * len(org.calls)


def test_a_script_is_refused_in_no_language_mode(fake: ExchangePsrpFake, kdc: Kdc,
                                                 org: Organisation) -> None:
    with RunspacePool(connect(fake, kdc), configuration_name="Microsoft.Exchange") as pool:
        ps = PowerShell(pool)
        ps.add_script("Get-CASMailbox | Remove-Mailbox -Confirm:$false")
        assert ps.invoke() == []
        assert ps.had_errors and ps.state == PSInvocationState.FAILED
        error = ps.streams.error[0]
        assert "no-language mode" in str(error)
        assert error.fq_error == "ScriptsNotAllowed"
        # A command mixed in does not run either.
        ps = PowerShell(pool)
        ps.add_cmdlet("Get-AcceptedDomain").add_statement().add_script("whoami")
        assert ps.invoke() == [] and ps.had_errors
    assert org.calls == []


def test_statements_of_one_pipeline_share_the_scan_scope(https_fake: ExchangePsrpFake, kdc: Kdc,
                                                         org: Organisation) -> None:
    with RunspacePool(connect(https_fake, kdc), configuration_name="Microsoft.Exchange") as pool:
        forest = run(pool, ("Set-AdServerSettings", {"ViewEntireForest": True}),
                     ("Get-CASMailbox", {"ResultSize": "Unlimited"}))
        assert not forest.had_errors
        domains = {o.adapted_properties["PrimarySmtpAddress"].split("@")[1] for o in forest.output}
        assert domains == set(DOMAINS)
        # A new pipeline starts from a fresh session: the current domain only.
        domain = run(pool, ("Get-CASMailbox", {"ResultSize": "Unlimited"}))
        assert 0 < len(domain.output) < len(forest.output)


def test_error_record_comes_through_and_the_next_statement_runs(
        https_fake: ExchangePsrpFake, kdc: Kdc, org: Organisation) -> None:
    with RunspacePool(connect(https_fake, kdc), configuration_name="Microsoft.Exchange") as pool:
        ps = run(pool, ("Get-CASMailbox", {"Identity": "ghost@corp.example.com"}),
                 ("Get-AcceptedDomain", {}))
        # A non-terminating error: the pipeline completes (pypsrp's had_errors stays False).
        assert ps.state == PSInvocationState.COMPLETED
        assert len(ps.output) == len(DOMAINS)  # the second statement ran
        (error,) = ps.streams.error
        assert "ghost@corp.example.com" in str(error)
        assert error.category == 13  # ErrorCategory.ObjectNotFound
        assert error.target_name == "ghost@corp.example.com"
        assert error.exception is not None
        assert error.exception.types[0].endswith("ManagementObjectNotFoundException")
        assert error.fq_error


def test_values_arrive_verbatim(fake: ExchangePsrpFake, kdc: Kdc, org: Organisation) -> None:
    with RunspacePool(connect(fake, kdc), configuration_name="Microsoft.Exchange") as pool:
        ps = run(pool, ("Set-CASMailbox", {"Identity": HOSTILE, "ActiveSyncEnabled": False}),
                 ("Get-CASMailbox", {"Identity": "$(Get-Date)", "ResultSize": "Unlimited",
                                     "X": ["a_x0041_b", "<&>\"'"], "Y": None, "Z": 2**40}))
        # Neither mailbox exists: two error records, nothing ran as script.
        assert len(ps.streams.error) == 2
    assert org.calls[0].name == "Set-CASMailbox"
    assert org.calls[0].params == {"Identity": HOSTILE, "ActiveSyncEnabled": False}
    assert org.calls[1].params == {"Identity": "$(Get-Date)", "ResultSize": "Unlimited",
                                   "X": ["a_x0041_b", "<&>\"'"], "Y": None, "Z": 2**40}


def test_a_principal_without_rights_finds_no_cmdlet(https_fake: ExchangePsrpFake, kdc: Kdc,
                                                    org: Organisation) -> None:
    wsman = connect(https_fake, kdc, user=kdc.nobody_principal, password=kdc.nobody_password)
    with RunspacePool(wsman, configuration_name="Microsoft.Exchange") as pool:
        ps = run(pool, ("Get-CASMailbox", {}))
        assert ps.output == []
        assert "not recognized" in str(ps.streams.error[0])
        assert ps.streams.error[0].fq_error == "CommandNotFoundException"
    assert org.calls[-1].principal == kdc.nobody_principal


@pytest.mark.parametrize("case", ["wrong password", "unknown principal", "kdc down"])
def test_bad_credentials_never_reach_the_endpoint(https_fake: ExchangePsrpFake, kdc: Kdc,
                                                  org: Organisation, case: str) -> None:
    user, password = kdc.svc_principal, "not-the-password"
    if case == "unknown principal":
        user = f"ghost@{kdc.realm}"
    if case == "kdc down":
        password = kdc.svc_password
        kdc.stop_kdc()
    with pytest.raises(Exception) as info:  # spnego/krb5 error types vary
        RunspacePool(connect(https_fake, kdc, user=user, password=password),
                     configuration_name="Microsoft.Exchange").open()
    assert any(word in str(info.value) for word in ("integrity", "Preauthentication",
                                                     "not found in Kerberos", "KDC"))
    assert https_fake.shell_count == 0 and org.calls == []


def test_requests_without_a_token_get_401_negotiate(fake: ExchangePsrpFake) -> None:
    verify = str(fake.ca_file) if fake.ca_file else True
    with requests.Session() as http:
        response = http.post(fake.url, data=b"<s:Envelope/>", verify=verify, timeout=10,
                             headers={"Content-Type": "application/soap+xml;charset=UTF-8"})
        assert response.status_code == 401
        assert "Negotiate" in response.headers["WWW-Authenticate"]
        bad = http.post(fake.url, data=b"x", verify=verify, timeout=10,
                        headers={"Authorization": "Negotiate AAAA"})
        assert bad.status_code == 401
        assert fake.shell_count == 0


def test_only_the_exchange_configuration_exists(https_fake: ExchangePsrpFake, kdc: Kdc) -> None:
    pool = RunspacePool(connect(https_fake, kdc), configuration_name="Microsoft.PowerShell")
    with pytest.raises(WSManFaultError) as info:
        pool.open()
    assert info.value.code == 2150858770
    assert https_fake.shell_count == 0


def test_restart_forgets_shells_and_a_new_pool_works(fake: ExchangePsrpFake, kdc: Kdc) -> None:
    wsman = connect(fake, kdc)
    pool = RunspacePool(wsman, configuration_name="Microsoft.Exchange")
    pool.open()
    assert run(pool, ("Get-AcceptedDomain", {})).output
    fake.restart()
    with pytest.raises(WSManFaultError) as info:
        run(pool, ("Get-AcceptedDomain", {}))
    assert info.value.code == 2150858843  # the shell was not found
    assert "shell was not found" in str(info.value.reason)
    assert not pool.is_alive()
    with RunspacePool(wsman, configuration_name="Microsoft.Exchange") as fresh:
        assert run(fresh, ("Get-AcceptedDomain", {})).output


def test_injected_http_failures(https_fake: ExchangePsrpFake, kdc: Kdc) -> None:
    with RunspacePool(connect(https_fake, kdc), configuration_name="Microsoft.Exchange") as pool:
        https_fake.fail_next(1, status=503)
        with pytest.raises(WinRMTransportError) as info:
            run(pool, ("Get-AcceptedDomain", {}))
        assert info.value.code == 503
    with RunspacePool(connect(https_fake, kdc), configuration_name="Microsoft.Exchange") as pool:
        https_fake.garbage_next(1)
        with pytest.raises(Exception, match=r"syntax error|not well-formed|mismatched tag"):
            run(pool, ("Get-AcceptedDomain", {}))
    before = https_fake.requests
    with RunspacePool(connect(https_fake, kdc), configuration_name="Microsoft.Exchange") as pool:
        assert run(pool, ("Get-AcceptedDomain", {})).output
    assert https_fake.requests > before


def test_stop_makes_it_unreachable_and_start_reopens_the_same_port(
        https_fake: ExchangePsrpFake, kdc: Kdc) -> None:
    port = https_fake.port
    https_fake.stop()
    with pytest.raises(requests.exceptions.ConnectionError):
        RunspacePool(connect(https_fake, kdc), configuration_name="Microsoft.Exchange").open()
    https_fake.start()
    assert https_fake.port == port
    with RunspacePool(connect(https_fake, kdc), configuration_name="Microsoft.Exchange") as pool:
        assert run(pool, ("Get-AcceptedDomain", {})).output


def test_pipelines_of_a_pool_run_at_once_up_to_its_runspaces(https_fake: ExchangePsrpFake,
                                                             kdc: Kdc, org: Organisation) -> None:
    org.delay("Get-AcceptedDomain", 0.5, times=6)
    with RunspacePool(connect(https_fake, kdc), configuration_name="Microsoft.Exchange",
                      max_runspaces=3) as pool:
        started = time.monotonic()
        shells = []
        for _ in range(6):
            ps = PowerShell(pool)
            ps.add_cmdlet("Get-AcceptedDomain")
            ps.begin_invoke()
            shells.append(ps)
        for ps in shells:
            ps.end_invoke()
            assert ps.output and not ps.had_errors
        elapsed = time.monotonic() - started
    assert https_fake.peak_concurrency == 3
    assert 0.9 < elapsed < 3.0  # two waves of three, not six in a row


def test_a_slow_cmdlet_outlives_receive_timeouts_and_can_be_stopped(
        https_fake: ExchangePsrpFake, kdc: Kdc, org: Organisation) -> None:
    org.delay("Get-AcceptedDomain", 2.2)
    with RunspacePool(connect(https_fake, kdc, timeout=1), configuration_name="Microsoft.Exchange") as pool:
        # Receives time out (w:TimedOut, which pypsrp retries) until the output is there.
        slow = run(pool, ("Get-AcceptedDomain", {}))
        assert slow.output and slow.state == PSInvocationState.COMPLETED
        org.delay("Get-AcceptedDomain", 1.0)
        ps = PowerShell(pool)
        ps.add_cmdlet("Get-AcceptedDomain")
        ps.begin_invoke()
        ps.stop()
        assert ps.state == PSInvocationState.STOPPED
        assert run(pool, ("Get-AcceptedDomain", {})).output  # the pool goes on


def test_plain_soap_over_http_is_refused(kdc: Kdc, krb5_ccache: Path, org: Organisation) -> None:
    with ExchangePsrpFake(org, keytab=kdc.service_keytab) as fake:
        wsman = WSMan(kdc.host, port=fake.port, ssl=False, path="PowerShell", auth="kerberos",
                      username=kdc.svc_principal, password=kdc.svc_password, encryption="never",
                      negotiate_service="HTTP", operation_timeout=5)
        _OPEN.append(wsman)
        with pytest.raises(WinRMTransportError) as info:
            RunspacePool(wsman, configuration_name="Microsoft.Exchange").open()
        assert info.value.code == 400
        assert fake.shell_count == 0


def test_process_entry_point_serves_a_generated_organisation(kdc: Kdc, krb5_ccache: Path,
                                                             tmp_path: Path) -> None:
    import subprocess
    import sys

    env = dict(os.environ, KRB5_KTNAME=f"FILE:{tmp_path / 'none.keytab'}")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mdm.devfakes.exchange_psrp", "--mailboxes", "30", "--devices", "40",
         "--keytab", str(kdc.service_keytab), "--tls",
         "--principal-map", f"{kdc.svc_principal}=*;{kdc.nobody_principal}="],
        stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().split()[1]
        ca = proc.stdout.readline().split()[1]
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        wsman = WSMan(kdc.host, port=port, ssl=True, path="PowerShell", auth="kerberos",
                      username=kdc.svc_principal, password=kdc.svc_password,
                      cert_validation=ca,  # type: ignore[arg-type]
                      negotiate_service="HTTP", operation_timeout=5)
        _OPEN.append(wsman)
        with RunspacePool(wsman, configuration_name="Microsoft.Exchange") as pool:
            ps = run(pool, ("Set-AdServerSettings", {"ViewEntireForest": True}),
                     ("Get-CASMailbox", {"ResultSize": "Unlimited"}))
            assert len(ps.output) == 30 and not ps.streams.error
    finally:
        proc.terminate()
        assert proc.wait(10) == 0


def test_fast_clixml_is_what_psrpcore_would_write() -> None:
    from datetime import UTC, datetime, timedelta
    from xml.etree import ElementTree as ET

    from psrpcore.types._serializer import serialize

    from mdm.devfakes.exchange_clixml import psout_clixml, to_psobject
    from mdm.devfakes.exchange_org import PSOut

    org = Organisation.generate(mailboxes=4, devices=8)
    outs = org.execute("Get-CASMailbox", {"ResultSize": "Unlimited"}, principal="x",
                       session=SessionState())
    for mailbox in list(outs):
        outs += org.execute("Get-MobileDeviceStatistics",
                            {"Mailbox": mailbox.properties["Identity"]}, principal="x",
                            session=SessionState())
    outs.append(PSOut(("X.Odd", "System.Object"), {
        "List": ["a", "b_x0041_<&>\"", "\x01"], "Null": None, "Big": 2**40, "Small": -5,
        "Span": timedelta(days=1, minutes=5, microseconds=3), 'Q"uote': "v", "Flag": False,
        "When": datetime(2026, 1, 2, 3, 4, 5, 600000, tzinfo=UTC)}, "to<string>"))
    assert len(outs) > 6
    for out in outs:
        reference = serialize(to_psobject(out), None)  # type: ignore[arg-type]  # no secure strings
        assert psout_clixml(out) == ET.tostring(reference, encoding="utf-8")


def test_garbage_psrp_from_an_authenticated_client_is_a_fault(https_fake: ExchangePsrpFake,
                                                              kdc: Kdc) -> None:
    import base64
    import uuid

    with RunspacePool(connect(https_fake, kdc), configuration_name="Microsoft.Exchange") as pool:
        with pytest.raises(WSManFaultError) as info:
            pool.shell.command("", arguments=[base64.b64encode(b"\x00" * 40).decode()],
                               command_id=str(uuid.uuid4()).upper())
        assert info.value.code
        assert run(pool, ("Get-AcceptedDomain", {})).output  # the pool goes on


def test_output_is_split_to_fit_a_small_envelope(kdc: Kdc, krb5_ccache: Path) -> None:
    org = Organisation.generate(mailboxes=120, devices=10)
    counts = []
    with ExchangePsrpFake(org, keytab=kdc.service_keytab, tls=True) as fake:
        for envelope in (None, 16384):
            wsman = connect(fake, kdc)
            if envelope:
                wsman.update_max_payload_size(envelope)
            before = fake.requests
            with RunspacePool(wsman, configuration_name="Microsoft.Exchange") as pool:
                ps = run(pool, ("Get-CASMailbox", {"ResultSize": "Unlimited"}))
                assert len(ps.output) == 120 and not ps.streams.error
            counts.append(fake.requests - before)
    # ~100 kB of output: two Receives at the default size, many at 16 kB.
    assert counts[1] >= counts[0] + 5, counts


def test_a_pipeline_the_fast_reader_declines_goes_through_psrpcore(
        https_fake: ExchangePsrpFake, kdc: Kdc, org: Organisation) -> None:
    from mdm.devfakes.exchange_pipeline import read_create_pipeline

    assert read_create_pipeline(b"\x00" * 30) is None
    with RunspacePool(connect(https_fake, kdc), configuration_name="Microsoft.Exchange") as pool:
        # A hashtable value is not read by the fast reader: psrpcore deserializes this pipeline.
        ps = run(pool, ("Set-AdServerSettings", {"ViewEntireForest": True}),
                 ("Get-CASMailbox", {"Identity": HOSTILE, "Extra": {"k": "v"}}))
        assert len(ps.streams.error) == 1
    assert org.calls[1].params == {"Identity": HOSTILE, "Extra": {"k": "v"}}
