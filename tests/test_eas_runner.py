"""``ExchangeRunner`` end to end: pypsrp over real sockets (HTTPS, and HTTP with Kerberos message
encryption) to the WSMan/PSRP Exchange fake, authenticated by a real MIT KDC (tests/kdc.py).
What the server received is read from ``fake.org.calls``, never from the runner itself."""

from __future__ import annotations

import asyncio
import gc
import time
from datetime import timedelta

import pytest

from mdm.core.metrics import REGISTRY
from mdm.devfakes.exchange_org import ExchangeFault
from mdm.eas import cmdlets as C
from mdm.eas.cmdlets import Naming
from mdm.eas.errors import (
    CmdletFailed,
    CmdletNotPermitted,
    ExchangeAuthError,
    ExchangeProtocolError,
    ExchangeTimeout,
    ExchangeUnavailable,
    ObjectNotFound,
)
from mdm.eas.records import parse_device_statistics, parse_mailbox, parse_policy
from tests.eas_psrp_support import EasWorld, eas_world_fixture  # noqa: F401  (fixtures)
from tests.engines import ENGINE_FREE
from tests.kdc import kdc_fixture, krb5_ccache_fixture  # noqa: F401

pytestmark = ENGINE_FREE

HOSTILE = ("x'; Remove-Mailbox -Identity * #", "$(Get-Date)", 'a"; b `$c', "@(1);exit")


def _names(world_fake: object) -> list[str]:
    return [call.name for call in world_fake.org.calls]  # type: ignore[attr-defined]


@pytest.mark.parametrize("tls", [True, False], ids=["https", "http-encrypted"])
async def test_get_cas_mailbox_gives_records(eas_world: EasWorld, tls: bool) -> None:
    fake = eas_world.fake(tls=tls)
    runner = eas_world.runner(fake)
    records = await runner.run(C.get_cas_mailbox())
    mailboxes = [parse_mailbox(r) for r in records]
    assert mailboxes and all(m.identity.startswith("corp.example.com/") for m in mailboxes)
    assert all(isinstance(r["ActiveSyncEnabled"], bool) for r in records)
    assert fake.org.calls[-1].principal == eas_world.kdc.svc_principal
    assert fake.org.calls[-1].params == {"ResultSize": "Unlimited"}
    health = runner.health()[0]
    assert health.connected and health.last_ok_at is not None and health.last_error is None


@pytest.mark.parametrize(("naming", "sent"), [
    (Naming.EXCHANGE_2010, "Get-ActiveSyncDeviceStatistics"),
    (Naming.EXCHANGE_2013, "Get-MobileDeviceStatistics"),
])
async def test_names_follow_the_server_found_once_per_connection(
        eas_world: EasWorld, naming: Naming, sent: str) -> None:
    fake = eas_world.fake(eas_world.org(naming=naming))
    runner = eas_world.runner(fake)
    mailbox = parse_mailbox((await runner.run(C.get_cas_mailbox(with_partnership_only=True)))[0])
    devices = await runner.run(C.get_device_statistics(mailbox=mailbox.identity))
    await runner.run(C.get_device_statistics(mailbox=mailbox.identity))
    assert await runner.naming() is naming
    assert devices and parse_device_statistics(devices[0]).device_id
    names = _names(fake)
    assert names.count(sent) == 2
    assert names.count("Get-Command") == 1  # the probe, once for this connection
    fake.restart()  # a new connection probes again
    await runner.run(C.get_accepted_domain())
    assert _names(fake).count("Get-Command") == 2


async def test_password_auth(eas_world: EasWorld) -> None:
    fake = eas_world.fake(tls=False)
    runner = eas_world.runner(fake, auth="password")
    assert await runner.run(C.get_accepted_domain())


async def test_wrong_password_is_an_auth_error_naming_the_principal(eas_world: EasWorld) -> None:
    fake = eas_world.fake()
    runner = eas_world.runner(fake, auth="wrong-password-123")
    with pytest.raises(ExchangeAuthError) as info:
        await runner.run(C.get_accepted_domain())
    assert eas_world.kdc.svc_principal in str(info.value)
    assert "wrong-password-123" not in str(info.value)
    assert fake.org.calls == []
    assert runner.health()[0].last_error_reason == "auth_failed"


async def test_keytab_without_the_principal(eas_world: EasWorld) -> None:
    fake = eas_world.fake()
    runner = eas_world.runner(fake, keytab_file=str(eas_world.kdc.service_keytab))
    with pytest.raises(ExchangeAuthError, match="keytab has no key"):
        await runner.run(C.get_accepted_domain())


async def test_kdc_down_on_a_fresh_runner(eas_world: EasWorld) -> None:
    fake = eas_world.fake()
    runner = eas_world.runner(fake)
    eas_world.kdc.stop_kdc()
    with pytest.raises(ExchangeAuthError, match="cannot reach any KDC"):
        await runner.run(C.get_accepted_domain())


async def test_kdc_down_after_login_reconnects_with_the_cached_tickets(eas_world: EasWorld) -> None:
    fake = eas_world.fake()
    runner = eas_world.runner(fake)
    await runner.run(C.get_accepted_domain())
    eas_world.kdc.stop_kdc()
    fake.restart()  # a new pool, a new connection: authenticated from the private ccache
    assert await runner.run(C.get_accepted_domain())


async def test_unreachable_server_after_retries(eas_world: EasWorld) -> None:
    fake = eas_world.fake()
    runner = eas_world.runner(fake, retries=2)
    fake.stop()
    started = time.monotonic()
    with pytest.raises(ExchangeUnavailable, match="cannot reach"):
        await runner.run(C.get_accepted_domain())
    assert time.monotonic() - started < 10
    health = runner.health()[0]
    assert not health.connected and health.last_error_reason == "unavailable"
    fake.start()  # the same port again: the runner recovers by itself
    assert await runner.run(C.get_accepted_domain())


async def test_restart_the_next_call_reconnects(eas_world: EasWorld) -> None:
    fake = eas_world.fake()
    runner = eas_world.runner(fake, retries=1)
    await runner.run(C.get_accepted_domain())
    fake.restart()
    assert fake.shell_count == 0
    assert await runner.run(C.get_accepted_domain())
    assert fake.shell_count == 1
    assert runner.health()[0].last_error_reason == "unavailable"  # the old shell's fault


@pytest.mark.parametrize("tls", [True, False], ids=["https", "http-encrypted"])
async def test_http_500_is_retried(eas_world: EasWorld, tls: bool) -> None:
    fake = eas_world.fake(tls=tls)
    runner = eas_world.runner(fake)
    await runner.run(C.get_accepted_domain())
    fake.fail_next(1, status=500)
    assert await runner.run(C.get_accepted_domain())
    for _ in range(100):  # the broken pool's shell is deleted in the background
        if fake.shell_count == 1:
            break
        await asyncio.sleep(0.02)
    assert fake.shell_count == 1
    fake.fail_next(10, status=503)
    with pytest.raises(ExchangeUnavailable, match="HTTP 503"):
        await runner.run(C.get_accepted_domain())


async def test_garbage_is_a_protocol_error_after_retries(eas_world: EasWorld) -> None:
    fake = eas_world.fake()
    runner = eas_world.runner(fake)
    await runner.run(C.get_accepted_domain())
    fake.garbage_next(1)
    assert await runner.run(C.get_accepted_domain())  # retried once, on a new pool
    fake.garbage_next(20)
    with pytest.raises(ExchangeProtocolError):
        await runner.run(C.get_accepted_domain())
    assert runner.health()[0].last_error_reason == "bad_response"


async def test_a_cmdlet_beyond_its_limit_is_stopped_and_the_runner_goes_on(eas_world: EasWorld) -> None:
    fake = eas_world.fake()
    runner = eas_world.runner(fake)
    await runner.run(C.get_accepted_domain())
    fake.org.delay("Get-CASMailbox", 6.0)
    started = time.monotonic()
    with pytest.raises(ExchangeTimeout, match="did not finish in time"):
        await runner.run(C.get_cas_mailbox(), limit_seconds=1.5)
    assert time.monotonic() - started < 4
    assert await runner.run(C.get_accepted_domain())  # the pool is still good
    assert runner.health()[0].connected


async def test_the_event_loop_is_not_blocked(eas_world: EasWorld) -> None:
    fake = eas_world.fake()
    runner = eas_world.runner(fake)
    fake.org.delay("Get-CASMailbox", 1.0)
    gaps: list[float] = []

    async def ticker() -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.01)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    # One CI run saw the window's first tick 1.04 s late (not reproduced since). The runner's work
    # is in its executor threads, which release the GIL while they wait (a KDC that never answers
    # left the loop's ticks within 15 ms for 18 s); the likeliest stall is a full collection of
    # the test process's own heap (an xdist worker after ~1,000 tests). It is collected and frozen
    # before the window, as the server settles its collector at start.
    gc.collect()
    gc.freeze()
    task = asyncio.create_task(ticker())
    try:
        await runner.run(C.get_cas_mailbox())
    finally:
        task.cancel()
        gc.unfreeze()
    assert len(gaps) > 50 and max(gaps) < 0.25


async def test_not_permitted_cmdlet(eas_world: EasWorld) -> None:
    fake = eas_world.fake()
    nobody = eas_world.runner(fake, auth=eas_world.kdc.nobody_password,
                              principal=eas_world.kdc.nobody_principal)
    with pytest.raises(CmdletNotPermitted) as info:
        await nobody.run(C.get_cas_mailbox())
    assert info.value.cmdlet == "Get-CASMailbox"
    assert "not recognized" in info.value.message
    assert nobody.health()[0].connected  # a refusal is not a broken connection


async def test_error_records_are_cmdlet_errors_with_their_message(eas_world: EasWorld) -> None:
    fake = eas_world.fake(eas_world.org(naming=Naming.EXCHANGE_2010))
    runner = eas_world.runner(fake)
    with pytest.raises(ObjectNotFound) as info:
        await runner.run(C.remove_device("corp.example.com/Users/ghost/ExchangeActiveSyncDevices/x§y"))
    assert info.value.cmdlet == "Remove-ActiveSyncDevice"
    assert "ghost" in info.value.message
    fake.org.inject("Get-AcceptedDomain", ExchangeFault(
        message="Active Directory operation failed on dc1.", error_id="ADOperation,GetAcceptedDomain",
        category="InvalidOperation", exception_type="Microsoft.Exchange.Data.Directory.ADOperationException",
        target=None))
    with pytest.raises(CmdletFailed) as failed:
        await runner.run(C.get_accepted_domain())
    assert type(failed.value) is CmdletFailed
    assert failed.value.category == "InvalidOperation"
    assert failed.value.message == "Active Directory operation failed on dc1."
    assert fake.org.calls[-1].name == "Get-AcceptedDomain"


@pytest.mark.parametrize("tls", [True, False], ids=["https", "http-encrypted"])
async def test_hostile_values_arrive_verbatim(eas_world: EasWorld, tls: bool) -> None:
    fake = eas_world.fake(tls=tls)
    runner = eas_world.runner(fake)
    for value in HOSTILE:
        with pytest.raises(ObjectNotFound):
            await runner.run(C.set_cas_mailbox(value, policy=value))
        assert fake.org.calls[-1].params == {"Identity": value, "ActiveSyncMailboxPolicy": value}


@pytest.mark.parametrize(("naming", "lock", "enabled"), [
    (Naming.EXCHANGE_2010, "MaxInactivityTimeDeviceLock", "DevicePasswordEnabled"),
    (Naming.EXCHANGE_2013, "MaxInactivityTimeLock", "PasswordEnabled"),
])
async def test_policy_values_typed_and_verbatim_under_the_servers_parameter_names(
        eas_world: EasWorld, naming: Naming, lock: str, enabled: str) -> None:
    fake = eas_world.fake(eas_world.org(naming=naming))
    runner = eas_world.runner(fake)
    name = HOSTILE[0]
    await runner.run(C.new_policy(name, {"MaxInactivityTimeDeviceLock": timedelta(minutes=15),
                                         "DevicePasswordEnabled": True}))
    sent = fake.org.calls[-1].params
    assert sent == {"Name": name, lock: timedelta(minutes=15), enabled: True}
    policy = parse_policy((await runner.run(C.get_policy(name)))[0])
    assert policy.name == name and policy.settings.inactivity_lock_seconds == 900
    await runner.run(C.set_policy(name, {"MaxInactivityTimeDeviceLock": timedelta(seconds=90)}))
    policy = parse_policy((await runner.run(C.get_policy(name)))[0])
    assert policy.settings.inactivity_lock_seconds == 90
    await runner.run(C.remove_policy(name))
    assert fake.org.calls[-1].params == {"Identity": name, "Confirm": False}


async def test_forest_scope_on_every_pipeline(eas_world: EasWorld) -> None:
    org = eas_world.org(mailboxes=12, devices=12)
    fake = eas_world.fake(org)
    domain = eas_world.runner(fake)
    forest = eas_world.runner(fake, scope="forest", concurrency=3)
    in_domain = {parse_mailbox(r).identity.split("/")[0] for r in await domain.run(C.get_cas_mailbox())}
    assert in_domain == {"corp.example.com"}
    results = await asyncio.gather(*(forest.run(C.get_cas_mailbox()) for _ in range(6)))
    for records in results:  # every pipeline (each on whatever runspace) sees the forest
        assert {parse_mailbox(r).identity.split("/")[0] for r in records} == {
            "corp.example.com", "branch.example.com"}
    names = [c.name for c in org.calls]
    assert names.count("Set-AdServerSettings") == 6  # one per pipeline, none for `domain`
    assert all(c.params == {"ViewEntireForest": True}
               for c in org.calls if c.name == "Set-AdServerSettings")


async def test_cluster_failover_and_health(eas_world: EasWorld) -> None:
    org = eas_world.org()
    first, second = eas_world.fake(org), eas_world.fake(org)
    runner = eas_world.runner(first, second, retries=0)
    first.stop()
    assert await runner.run(C.get_accepted_domain())
    one, two = runner.health()
    assert one.last_error_reason == "unavailable" and not one.connected
    assert two.connected and two.last_ok_at is not None and two.last_error is None
    requests_before = first.requests
    first.start()
    assert await runner.run(C.get_accepted_domain())  # the first is passed over for a while
    assert first.requests == requests_before


async def test_standard_mode_uses_the_one_server(eas_world: EasWorld) -> None:
    fake = eas_world.fake()
    runner = eas_world.runner(fake)
    assert [h.url for h in runner.health()] == [fake.url.replace("PowerShell", "PowerShell")]


@pytest.mark.parametrize("tls", [True, False], ids=["https", "http-encrypted"])
async def test_concurrency_limit(eas_world: EasWorld, tls: bool) -> None:
    fake = eas_world.fake(tls=tls)
    runner = eas_world.runner(fake, concurrency=2)
    await runner.run(C.get_accepted_domain())
    fake.reset_peak()
    fake.org.delay("Get-CASMailbox", 0.4, times=10)
    results = await asyncio.gather(*(runner.run(C.get_cas_mailbox()) for _ in range(10)))
    assert all(results)
    assert fake.peak_concurrency == 2


async def test_run_batch_with_50_statements_is_one_pipeline(eas_world: EasWorld) -> None:
    org = eas_world.org(mailboxes=60, devices=90)
    fake = eas_world.fake(org)
    runner = eas_world.runner(fake, scope="forest")  # 51 statements with Set-AdServerSettings
    mailboxes = [parse_mailbox(r) for r in await runner.run(C.get_cas_mailbox())][:50]
    assert len(mailboxes) == 50
    before = fake.pipelines_run
    merged = await runner.run_batch([C.get_device_statistics(mailbox=m.identity) for m in mailboxes])
    assert fake.pipelines_run == before + 1
    one_by_one = [r for m in mailboxes
                  for r in await runner.run(C.get_device_statistics(mailbox=m.identity))]
    assert [r["Identity"] for r in merged] == [r["Identity"] for r in one_by_one]
    assert await runner.run_batch([]) == []


async def test_metrics_count_outcomes(eas_world: EasWorld) -> None:
    def count(outcome: str) -> float:
        return REGISTRY.get_sample_value(
            "mdm_eas_cmdlets_total", {"cmdlet": "Get-AcceptedDomain", "outcome": outcome}) or 0.0

    fake = eas_world.fake()
    runner = eas_world.runner(fake)
    ok, failed = count("ok"), count("not_found")
    await runner.run(C.get_accepted_domain())
    fake.org.inject("Get-AcceptedDomain", ExchangeFault(
        message="gone", error_id="x", category="ObjectNotFound", exception_type="", target=None))
    with pytest.raises(ObjectNotFound):
        await runner.run(C.get_accepted_domain())
    assert (count("ok"), count("not_found")) == (ok + 1, failed + 1)


@pytest.mark.parametrize(("cmdlet", "repeated"), [
    (C.get_cas_mailbox(), True),
    (C.remove_device("corp.example.com/Users/x/ExchangeActiveSyncDevices/a§b"), False),
])
async def test_only_a_repeatable_cmdlet_is_retried_once_the_server_took_it(
        eas_world: EasWorld, cmdlet: C.Cmdlet, repeated: bool) -> None:
    """The server restarts while the cmdlet runs: a read is run again on a new pool, a removal
    is not (its answer was lost, not its effect)."""
    fake = eas_world.fake()
    runner = eas_world.runner(fake, retries=3)
    await runner.run(C.get_accepted_domain())
    fake.org.delay(cmdlet.logical_name, 1.0)
    task = asyncio.create_task(runner.run(cmdlet))
    await asyncio.sleep(0.4)  # the pipeline is running (delayed inside the cmdlet)
    fake.restart()
    sent = cmdlet.name(Naming.EXCHANGE_2013)
    if repeated:
        assert await task
        assert [c.name for c in fake.org.calls].count(sent) == 2
    else:
        with pytest.raises(ExchangeUnavailable, match="no longer knows our session"):
            await task
        assert [c.name for c in fake.org.calls].count(sent) == 1


async def test_close_releases_the_server_shell(eas_world: EasWorld) -> None:
    fake = eas_world.fake()
    runner = eas_world.runner(fake)
    await runner.run(C.get_accepted_domain())
    assert fake.shell_count == 1
    await runner.close()
    assert fake.shell_count == 0
    assert not runner.health()[0].connected
    with pytest.raises(ExchangeUnavailable, match="closed"):
        await runner.run(C.get_accepted_domain())


async def test_retries_pause_with_backoff_within_the_calls_budget(eas_world: EasWorld) -> None:
    """Transient failures are retried ``retries`` times, each after a backoff pause (here exactly
    0.6 s: initial = max), and never past the call's time budget."""
    fake = eas_world.fake()
    runner = eas_world.runner(fake, retries=2, backoff_initial_seconds=0.6, backoff_max_seconds=0.6)
    await runner.run(C.get_accepted_domain())
    fake.fail_next(50, status=503)
    started = time.monotonic()
    with pytest.raises(ExchangeUnavailable, match="HTTP 503"):
        await runner.run(C.get_accepted_domain())
    assert 1.2 <= time.monotonic() - started < 6  # two pauses of 0.6 s, then it gives up
    started = time.monotonic()
    with pytest.raises(ExchangeUnavailable):  # a budget of 0.9 s leaves room for one pause only
        await runner.run(C.get_accepted_domain(), limit_seconds=0.9)
    assert time.monotonic() - started < 1.2


@pytest.mark.parametrize("tls", [True, False], ids=["https", "http-encrypted"])
async def test_a_server_that_stops_answering_is_a_timeout_within_the_budget(
        eas_world: EasWorld, tls: bool) -> None:
    """The server accepts the connection but answers nothing for a while (a hung IIS): the call
    ends with a timeout at its budget, not after HTTP read timeouts and pypsrp's own retries; the
    runner works again once the server does."""
    fake = eas_world.fake(tls=tls)
    runner = eas_world.runner(fake, retries=3)
    await runner.run(C.get_accepted_domain())
    fake.delay_next(1, seconds=8.0)  # the pipeline's Command is answered 8 s late
    started = time.monotonic()
    with pytest.raises(ExchangeTimeout, match="did not answer in time"):
        await runner.run(C.get_accepted_domain(), limit_seconds=2.0)
    assert time.monotonic() - started < 5.0  # the budget and a second of grace, not 8 s
    assert not runner.health()[0].connected  # that pool is dropped: its state is unknown
    assert await runner.run(C.get_accepted_domain())  # a new pool
    assert runner.health()[0].connected
