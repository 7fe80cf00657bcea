"""The fake Exchange organisation (mdm/devfakes/exchange_org*.py) behaves as Exchange does, and the
in-process runner over it (mdm/devfakes/exchange_local.py) keeps the CmdletRunner contract."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Any

import pytest

from mdm.devfakes.exchange_local import LocalOrgRunner
from mdm.devfakes.exchange_org import ExchangeFault, Organisation, PSOut, SessionState
from mdm.eas import cmdlets as c
from mdm.eas.cmdlets import Naming
from mdm.eas.errors import (
    CmdletFailed,
    CmdletNotPermitted,
    ExchangeTimeout,
    ExchangeUnavailable,
    ObjectNotFound,
)
from mdm.eas.records import (
    PolicySettings,
    WipeState,
    parse_accepted_domain,
    parse_device_statistics,
    parse_mailbox,
    parse_policy,
)
from tests.engines import ENGINE_FREE

pytestmark = ENGINE_FREE

SVC = "mdm-svc@CORP.EXAMPLE.COM"
HOSTILE = "x'; Remove-Mailbox -Identity * # $(Get-Date) `\"q\""


def run(org: Organisation, name: str, session: SessionState | None = None, principal: str = SVC,
        **params: Any) -> list[PSOut]:
    return org.execute(name, params, principal=principal, session=session or SessionState())


def fault(org: Organisation, name: str, session: SessionState | None = None, principal: str = SVC,
          **params: Any) -> ExchangeFault:
    with pytest.raises(ExchangeFault) as info:
        run(org, name, session, principal, **params)
    return info.value


@pytest.fixture(params=[Naming.EXCHANGE_2010, Naming.EXCHANGE_2013], ids=["2010", "2013"])
def org(request: pytest.FixtureRequest) -> Organisation:
    org = Organisation(naming=request.param, domains=("corp.example.com", "branch.example.com"))
    org.add_mailbox("alice", smtp="alice@corp.example.com", sam="alice")
    org.add_mailbox("bob")
    org.add_mailbox("carol", domain="branch.example.com")
    org.add_device("alice", "ApplF17XK1JXHG7F")
    org.add_device("bob", "androidc1234567890", device_type="Android", model="Pixel 8", os="Android 14")
    return org


def device_name(org: Organisation) -> str:
    modern = org.naming is Naming.EXCHANGE_2013
    return "Get-MobileDeviceStatistics" if modern else "Get-ActiveSyncDeviceStatistics"


# ---- names ----------------------------------------------------------------------------------


def test_2010_knows_only_the_2010_names() -> None:
    org = Organisation(naming=Naming.EXCHANGE_2010)
    err = fault(org, "Get-MobileDeviceStatistics", Mailbox="x")
    assert (err.error_id, err.category) == ("CommandNotFoundException", "ObjectNotFound")
    assert err.exception_type == "System.Management.Automation.CommandNotFoundException"
    assert "The term 'Get-MobileDeviceStatistics' is not recognized" in err.message
    assert run(org, "Get-Command", Name=c.NAMING_PROBE, ErrorAction="SilentlyContinue") == []
    assert fault(org, "Get-Command", Name=c.NAMING_PROBE).error_id == "CommandNotFoundException"
    assert fault(org, "Invoke-Expression", Command="1").error_id == "CommandNotFoundException"


def test_2013_knows_both_names_and_answers_the_probe() -> None:
    org = Organisation(naming=Naming.EXCHANGE_2013)
    org.add_mailbox("alice")
    assert run(org, "get-mobiledevicestatistics", Mailbox="alice") == []
    assert run(org, "Get-ActiveSyncDeviceStatistics", Mailbox="alice") == []
    [probe] = run(org, "Get-Command", Name=c.NAMING_PROBE, ErrorAction="SilentlyContinue")
    assert probe.properties == {"Name": "Get-MobileDeviceStatistics", "CommandType": "Function",
                                "ModuleName": "", "Definition": ""}
    names = {o.properties["Name"] for o in run(org, "Get-Command", Name="*-MobileDevice*")}
    assert {"Clear-MobileDevice", "Remove-MobileDevice", "Set-MobileDeviceMailboxPolicy"} <= names


def test_unknown_parameter_is_a_binding_error(org: Organisation) -> None:
    err = fault(org, "Get-CASMailbox", Bogus=1)
    assert err.message == "A parameter cannot be found that matches parameter name 'Bogus'."
    assert (err.category, err.error_id) == ("InvalidArgument", "NamedParameterNotFound,Get-CASMailbox")
    assert err.exception_type == "System.Management.Automation.ParameterBindingException"
    # parameter names are case-insensitive, as in PowerShell
    assert len(run(org, "Get-CASMailbox", identity="alice")) == 1
    # ErrorAction SilentlyContinue hides an error record, never a binding error
    assert fault(org, "Get-CASMailbox", Bogus=1, ErrorAction="SilentlyContinue").category == "InvalidArgument"
    assert run(org, "Get-CASMailbox", Identity="nobody", ErrorAction="SilentlyContinue") == []


# ---- mailboxes ------------------------------------------------------------------------------


def test_cas_mailbox_properties(org: Organisation) -> None:
    [out] = run(org, "Get-CASMailbox", Identity="alice")
    assert out.type_names[0] == "Microsoft.Exchange.Data.Directory.Management.CASMailbox"
    p = out.properties
    assert p["Identity"] == "corp.example.com/Users/alice" == out.to_string
    assert p["DistinguishedName"] == "CN=alice,CN=Users,DC=corp,DC=example,DC=com"
    assert (p["ActiveSyncEnabled"], p["ActiveSyncMailboxPolicy"], p["HasActiveSyncDevicePartnership"]) == (
        True, "Default", True)
    mbx = parse_mailbox(p)
    assert (mbx.primary_smtp, mbx.sam_account_name, mbx.owner) == (
        "alice@corp.example.com", "alice", "alice@corp.example.com")


@pytest.mark.parametrize("key", ["alice", "ALICE@corp.example.com", "corp.example.com/Users/alice",
                                 "CN=alice,CN=Users,DC=corp,DC=example,DC=com", "corp\\alice"])
def test_mailbox_found_by_any_identity_form(org: Organisation, key: str) -> None:
    [out] = run(org, "Get-CASMailbox", Identity=key)
    assert out.properties["Name"] == "alice"
    guid = out.properties["Guid"]
    assert run(org, "Get-CASMailbox", Identity=guid)[0].properties["Name"] == "alice"


def test_missing_and_ambiguous_mailbox(org: Organisation) -> None:
    err = fault(org, "Get-CASMailbox", Identity="nobody")
    assert err.category == "ObjectNotFound" and err.target == "nobody"
    assert err.exception_type.endswith("ManagementObjectNotFoundException")
    assert "couldn't be found" in err.message
    org.add_mailbox("alice", domain="branch.example.com")
    forest = SessionState(view_entire_forest=True)
    err = fault(org, "Set-CASMailbox", forest, Identity="alice", ActiveSyncEnabled=False)
    assert err.category == "InvalidArgument"
    assert err.exception_type.endswith("ManagementObjectAmbiguousException")
    assert org.mailbox("corp.example.com/Users/alice").activesync_enabled  # type: ignore[union-attr]


def test_partnership_filter_and_result_size() -> None:
    org = Organisation.generate(mailboxes=1200, devices=300, seed=3)
    assert len(run(org, "Get-CASMailbox")) == 1000  # Exchange's default result size
    assert len(run(org, "Get-CASMailbox", ResultSize="Unlimited")) == 1200
    assert len(run(org, "Get-CASMailbox", ResultSize="7")) == 7
    assert len(run(org, "Get-CASMailbox", ResultSize=5)) == 5
    with_devices = {m.identity for m in org.store.mailboxes.values() if m.devices}
    out = run(org, "Get-CASMailbox", Filter=" HasActiveSyncDevicePartnership  -eq $TRUE",
              ResultSize="Unlimited")
    assert {o.properties["Identity"] for o in out} == with_devices
    assert fault(org, "Get-CASMailbox", Filter="Name -like '*'").category == "InvalidArgument"
    assert fault(org, "Get-CASMailbox", ResultSize="lots").category == "InvalidData"
    err = fault(org, "Get-CASMailbox", Identity="user000001", Filter="x")
    assert err.error_id.startswith("AmbiguousParameterSet")


def test_partnership_flag_stays_after_the_last_device_goes(org: Organisation) -> None:
    dev = run(org, device_name(org), Mailbox="bob")[0].properties["Identity"]
    run(org, "Remove-ActiveSyncDevice", Identity=dev, Confirm=False)
    [out] = run(org, "Get-CASMailbox", Identity="bob")
    assert out.properties["HasActiveSyncDevicePartnership"] is True  # as Exchange: never cleared
    assert run(org, device_name(org), Mailbox="bob") == []


def test_scope_is_the_current_domain_unless_the_forest_is_viewed(org: Organisation) -> None:
    session = SessionState()
    names = {o.properties["Name"] for o in run(org, "Get-CASMailbox", session)}
    assert names == {"alice", "bob"}
    assert fault(org, "Get-CASMailbox", session, Identity="carol").category == "ObjectNotFound"
    assert run(org, "Set-AdServerSettings", session, ViewEntireForest=True) == []
    assert session.view_entire_forest
    names = {o.properties["Name"] for o in run(org, "Get-CASMailbox", session)}
    assert names == {"alice", "bob", "carol"}
    assert run(org, "Get-CASMailbox", session, Identity="carol")[0].properties["Identity"] == (
        "branch.example.com/Users/carol")
    # another runspace has its own scope
    assert fault(org, "Get-CASMailbox", SessionState(), Identity="carol").category == "ObjectNotFound"
    domains = [parse_accepted_domain(o.properties) for o in run(org, "Get-AcceptedDomain")]
    assert [(d.domain_name, d.is_default) for d in domains] == [
        ("corp.example.com", True), ("branch.example.com", False)]


def test_set_cas_mailbox(org: Organisation) -> None:
    run(org, "New-ActiveSyncMailboxPolicy", Name="Strict")
    run(org, "Set-CASMailbox", Identity="alice", ActiveSyncEnabled=False, ActiveSyncMailboxPolicy="strict")
    p = run(org, "Get-CASMailbox", Identity="alice")[0].properties
    assert (p["ActiveSyncEnabled"], p["ActiveSyncMailboxPolicy"]) == (False, "Strict")
    assert p["ActiveSyncMailboxPolicyIsDefaulted"] is False
    # an unknown policy: not found, and nothing of the call changed (not even the other parameter)
    err = fault(org, "Set-CASMailbox", Identity="alice", ActiveSyncEnabled=True,
                ActiveSyncMailboxPolicy="Nope")
    assert err.category == "ObjectNotFound" and err.target == "Nope"
    assert org.mailbox("alice").activesync_enabled is False  # type: ignore[union-attr]
    err = fault(org, "Set-CASMailbox", Identity="alice", ActiveSyncEnabled="yes")
    assert err.category == "InvalidData" and "Boolean parameters accept only Boolean" in err.message
    run(org, "Set-CASMailbox", Identity="alice", ActiveSyncMailboxPolicy=None)  # back to the default
    assert run(org, "Get-CASMailbox", Identity="alice")[0].properties["ActiveSyncMailboxPolicy"] == "Default"
    err = fault(org, "Set-CASMailbox", ActiveSyncEnabled=True)
    assert err.error_id.startswith("MissingMandatoryParameter")


# ---- devices --------------------------------------------------------------------------------


def test_device_statistics(org: Organisation) -> None:
    [out] = run(org, device_name(org), Mailbox="alice@corp.example.com")
    modern = org.naming is Naming.EXCHANGE_2013
    kind = "MobileDeviceConfiguration" if modern else "ActiveSyncDeviceConfiguration"
    assert out.type_names[0].endswith(kind)
    dev = parse_device_statistics(out.properties)
    assert dev.identity == "corp.example.com/Users/alice/ExchangeActiveSyncDevices/iPhone§ApplF17XK1JXHG7F"
    assert (dev.device_id, dev.device_type, dev.model, dev.os) == (
        "ApplF17XK1JXHG7F", "iPhone", "iPhone15,2", "iOS 17.1 21B74")
    assert (dev.status, dev.access_state, dev.policy_applied, dev.wipe_state) == (
        "DeviceOk", "Allowed", "Default", WipeState.NONE)
    assert dev.last_sync is not None and dev.last_sync.tzinfo is not None
    [again] = run(org, device_name(org), Identity=dev.identity)
    assert again.properties == out.properties
    err = fault(org, device_name(org), Identity=dev.identity + "X")
    assert err.category == "ObjectNotFound"
    assert fault(org, device_name(org), Mailbox="nobody").category == "ObjectNotFound"


def test_one_phone_two_mailboxes(org: Organisation) -> None:
    org.add_device("bob", "ApplF17XK1JXHG7F")
    ids = [parse_device_statistics(run(org, device_name(org), Mailbox=m)[0].properties)
           for m in ("alice", "bob")]
    alice_phone = next(d for d in ids if "alice" in d.identity)
    assert {d.device_id for d in ids} >= {"ApplF17XK1JXHG7F"}
    assert org.device_syncs("ApplF17XK1JXHG7F") == 2
    run(org, "Clear-ActiveSyncDevice", Identity=alice_phone.identity, Confirm=False)
    states = {o.properties["Identity"]: o.properties["Status"]
              for m in ("alice", "bob") for o in run(org, device_name(org), Mailbox=m)}
    assert states[alice_phone.identity] == "DeviceWipePending"
    assert sorted(states.values()).count("DeviceOk") == 2  # bob's two partnerships are untouched


def test_wipe_life_cycle(org: Organisation) -> None:
    dev = parse_device_statistics(run(org, device_name(org), Mailbox="alice")[0].properties)
    clear = "Clear-MobileDevice" if org.naming is Naming.EXCHANGE_2013 else "Clear-ActiveSyncDevice"
    err = fault(org, clear, Identity=dev.identity)  # no -Confirm:$false: a remote host can't prompt
    assert err.category == "InvalidOperation" and "Confirmation is required" in err.message
    assert org.device(dev.identity).wipe_requested is None  # type: ignore[union-attr]
    assert run(org, clear, Identity=dev.identity, Confirm=False) == []

    def stats() -> Any:
        return parse_device_statistics(run(org, device_name(org), Identity=dev.identity)[0].properties)

    pending = stats()
    assert (pending.status, pending.wipe_state) == ("DeviceWipePending", WipeState.PENDING)
    assert pending.wipe_sent is None
    assert pending.wipe_requested is not None
    assert org.device_syncs("applf17xk1jxhg7f") == 1
    wiped = stats()
    assert (wiped.status, wiped.wipe_state) == ("DeviceWipeSucceeded", WipeState.ACKNOWLEDGED)
    assert wiped.wipe_acknowledged is not None and wiped.wipe_sent is not None
    assert wiped.last_sync == pending.last_sync  # a wiped phone does not sync mail
    time.sleep(0.01)
    org.device_syncs("ApplF17XK1JXHG7F")  # wiped again at every sync, still listed
    again = stats()
    assert again.status == "DeviceWipeSucceeded" and again.wipe_sent > wiped.wipe_sent
    assert fault(org, "Remove-ActiveSyncDevice", Identity=dev.identity).category == "InvalidOperation"
    run(org, "Remove-ActiveSyncDevice", Identity=dev.identity, Confirm=False)
    assert run(org, device_name(org), Mailbox="alice") == []
    assert org.device_syncs("ApplF17XK1JXHG7F") == 0
    err = fault(org, "Remove-ActiveSyncDevice", Identity=dev.identity, Confirm=False)
    assert err.category == "ObjectNotFound"


def test_a_normal_sync_moves_last_sync(org: Organisation) -> None:
    before = org.device(run(org, device_name(org), Mailbox="bob")[0].properties["Identity"])
    assert before is not None and before.last_success_sync is not None
    first = before.last_success_sync
    time.sleep(0.01)
    org.device_syncs("androidc1234567890")
    assert before.last_success_sync > first
    assert before.status == "DeviceOk"


def test_vanishing_objects(org: Organisation) -> None:
    dev = run(org, device_name(org), Mailbox="alice")[0].properties["Identity"]
    assert org.drop_device(dev) and not org.drop_device(dev)
    assert fault(org, "Clear-ActiveSyncDevice", Identity=dev, Confirm=False).category == "ObjectNotFound"
    assert org.drop_mailbox("bob") and not org.drop_mailbox("bob")
    assert fault(org, "Set-CASMailbox", Identity="bob", ActiveSyncEnabled=False).category == "ObjectNotFound"
    assert org.device_syncs("androidc1234567890") == 0  # its partnerships went with it


# ---- ActiveSync mailbox policies ------------------------------------------------------------


def policy_names(org: Organisation) -> tuple[str, str, str, str, str, str]:
    """(Get, New, Set, Remove, the DevicePasswordEnabled parameter, the default flag) for the
    organisation's newest names."""
    if org.naming is Naming.EXCHANGE_2013:
        return ("Get-MobileDeviceMailboxPolicy", "New-MobileDeviceMailboxPolicy",
                "Set-MobileDeviceMailboxPolicy", "Remove-MobileDeviceMailboxPolicy", "PasswordEnabled",
                "IsDefault")
    return ("Get-ActiveSyncMailboxPolicy", "New-ActiveSyncMailboxPolicy", "Set-ActiveSyncMailboxPolicy",
            "Remove-ActiveSyncMailboxPolicy", "DevicePasswordEnabled", "IsDefaultPolicy")


def test_default_policy_and_flavours(org: Organisation) -> None:
    get, *_, flag = policy_names(org)
    [default] = run(org, get)
    assert default.properties[flag] is True and default.properties["Name"] == "Default"
    policy = parse_policy(run(org, "Get-ActiveSyncMailboxPolicy", Identity="default")[0].properties)
    assert policy.is_default and policy.settings.allow_simple_password is True
    assert policy.settings.wipe_after_failed_attempts is None  # Unlimited
    [legacy] = run(org, "Get-ActiveSyncMailboxPolicy")
    assert "IsDefaultPolicy" in legacy.properties and "DevicePasswordEnabled" in legacy.properties
    assert legacy.type_names[0].endswith(".ActiveSyncMailboxPolicy")


def test_new_set_remove_policy(org: Organisation) -> None:
    get, new, set_, remove, enabled, flag = policy_names(org)
    length = "MinPasswordLength" if org.naming is Naming.EXCHANGE_2013 else "MinDevicePasswordLength"
    lock = "MaxInactivityTimeLock" if org.naming is Naming.EXCHANGE_2013 else "MaxInactivityTimeDeviceLock"
    expiry = "PasswordExpiration" if org.naming is Naming.EXCHANGE_2013 else "DevicePasswordExpiration"
    values: dict[str, Any] = {"Name": "Strict", enabled: True, length: 8, lock: timedelta(minutes=5),
                              expiry: "30.00:00:00", "RequireDeviceEncryption": True}
    [created] = run(org, new, **values)
    p = created.properties
    assert (p["Name"], p[enabled], p[length], p[lock], p[expiry], p[flag]) == (
        "Strict", True, 8, "00:05:00", "30.00:00:00", False)
    err = fault(org, new, Name="strict")
    assert "already exists" in err.message and err.target == "strict"
    changes: dict[str, Any] = {"Identity": "Strict", length: 4, lock: "Unlimited", flag: True}
    run(org, set_, **changes)
    [p2] = run(org, get, Identity="Strict")
    assert (p2.properties[length], p2.properties[lock], p2.properties[flag]) == (4, "Unlimited", True)
    assert run(org, get, Identity="Default")[0].properties[flag] is False
    err = fault(org, remove, Identity="Strict", Confirm=False)
    assert err.category == "InvalidOperation" and "default" in err.message
    back: dict[str, Any] = {"Identity": "Default", flag: True}
    run(org, set_, **back)
    run(org, "Set-CASMailbox", Identity="alice", ActiveSyncMailboxPolicy="Strict")
    assert fault(org, remove, Identity="Strict").category == "InvalidOperation"  # needs -Confirm:$false
    assert run(org, remove, Identity="Strict", Confirm=False) == []
    assert fault(org, get, Identity="Strict").category == "ObjectNotFound"
    assert run(org, "Get-CASMailbox", Identity="alice")[0].properties["ActiveSyncMailboxPolicy"] == "Default"


@pytest.mark.parametrize("param,value,category", [
    ("DevicePasswordEnabled", "true", "InvalidData"),  # a bool refuses a string
    ("MinDevicePasswordLength", 17, "InvalidData"),  # 1..16
    ("MinDevicePasswordLength", "Unlimited", "InvalidData"),  # not an Unlimited<T>
    ("MaxDevicePasswordFailedAttempts", 3, "InvalidData"),  # 4..16
    ("MaxDevicePasswordFailedAttempts", True, "InvalidData"),
    ("MaxInactivityTimeDeviceLock", "02:00:00", "InvalidData"),  # at most an hour
    ("MaxInactivityTimeDeviceLock", "soon", "InvalidData"),
    ("DevicePasswordHistory", -1, "InvalidData"),
    ("Colour", "red", "InvalidArgument"),
])
def test_policy_settings_are_typed(param: str, value: Any, category: str) -> None:
    org = Organisation(naming=Naming.EXCHANGE_2010)
    err = fault(org, "New-ActiveSyncMailboxPolicy", Name="P", **{param: value})
    assert err.category == category and err.target == param
    assert org.policy("P") is None  # nothing half-made


def test_policy_settings_accepted_forms() -> None:
    org = Organisation(naming=Naming.EXCHANGE_2010)
    params = PolicySettings(password_required=True, min_password_length=6, inactivity_lock_seconds=900,
                            wipe_after_failed_attempts=None, password_expiration_days=90).to_parameters()
    sent: dict[str, Any] = {**params, "MaxDevicePasswordFailedAttempts": "8"}
    [out] = run(org, "New-ActiveSyncMailboxPolicy", Name="P", **sent)
    policy = parse_policy(out.properties)
    assert policy.settings.password_required is True
    assert policy.settings.min_password_length == 6
    assert policy.settings.inactivity_lock_seconds == 900
    assert policy.settings.password_expiration_days == 90
    assert policy.settings.wipe_after_failed_attempts == 8
    run(org, "Set-ActiveSyncMailboxPolicy", Identity="P", MaxDevicePasswordFailedAttempts="Unlimited",
        MinDevicePasswordLength=None)
    again = parse_policy(run(org, "Get-ActiveSyncMailboxPolicy", Identity="P")[0].properties)
    assert again.settings.wipe_after_failed_attempts is None and again.settings.min_password_length is None


def test_2013_policy_cmdlets_take_the_2013_parameter_names() -> None:
    org = Organisation(naming=Naming.EXCHANGE_2013)
    err = fault(org, "New-MobileDeviceMailboxPolicy", Name="P", DevicePasswordEnabled=True)
    assert err.message == "A parameter cannot be found that matches parameter name 'DevicePasswordEnabled'."
    run(org, "New-ActiveSyncMailboxPolicy", Name="P", DevicePasswordEnabled=True)  # the 2010 one still works
    assert run(org, "Get-MobileDeviceMailboxPolicy", Identity="P")[0].properties["PasswordEnabled"] is True


# ---- values, permissions, faults ------------------------------------------------------------


def test_values_are_stored_verbatim_and_calls_recorded(org: Organisation) -> None:
    get, new, *_ = policy_names(org)
    run(org, new, Name=HOSTILE)
    assert run(org, get, Identity=HOSTILE)[0].properties["Name"] == HOSTILE
    run(org, "Set-CASMailbox", Identity="alice", ActiveSyncMailboxPolicy=HOSTILE)
    assert run(org, "Get-CASMailbox", Identity="alice")[0].properties["ActiveSyncMailboxPolicy"] == HOSTILE
    identity = org.add_mailbox(HOSTILE, smtp="odd@corp.example.com")
    assert run(org, "Get-CASMailbox", Identity=identity)[0].properties["Name"] == HOSTILE
    assert org.calls[-1].params == {"Identity": identity}
    assert (org.calls[-1].principal, org.calls[-1].name) == (SVC, "Get-CASMailbox")
    assert any(call.params.get("ActiveSyncMailboxPolicy") == HOSTILE for call in org.calls)
    assert len(org.store.mailboxes) == 4  # nothing was removed


def test_rbac_hides_what_is_not_permitted() -> None:
    org = Organisation(naming=Naming.EXCHANGE_2013,
                       permissions={SVC: {"Get-CASMailbox", "Get-ActiveSyncDeviceStatistics"}})
    org.add_mailbox("alice")
    assert run(org, "Get-MobileDeviceStatistics", Mailbox="alice") == []
    assert run(org, "Get-CASMailbox", principal=SVC.lower())  # principals compare case-insensitively
    err = fault(org, "Clear-MobileDevice", Identity="x", Confirm=False)
    assert err.error_id == "CommandNotFoundException"
    assert fault(org, "Get-CASMailbox", principal="someone@else").error_id == "CommandNotFoundException"
    assert run(org, "Get-Command", Name="Clear-MobileDevice", ErrorAction="SilentlyContinue") == []
    assert [o.properties["Name"] for o in run(org, "Get-Command", Name="Get-*")] == [
        "Get-CASMailbox", "Get-ActiveSyncDeviceStatistics", "Get-MobileDeviceStatistics", "Get-Command"]


def test_injected_faults_and_delays(org: Organisation) -> None:
    boom = ExchangeFault("Active Directory server DC1 is not available.", error_id="ADTransient",
                         category="ReadError")
    org.inject("Get-MobileDeviceStatistics", boom, times=2)
    for _ in range(2):
        assert fault(org, "Get-ActiveSyncDeviceStatistics", Mailbox="alice") is boom
    assert len(run(org, device_name(org), Mailbox="alice")) == 1
    org.delay("Get-CASMailbox", 1.0)
    done: list[float] = []

    def slow() -> None:
        run(org, "Get-CASMailbox", Identity="alice")
        done.append(time.monotonic())

    thread = threading.Thread(target=slow)
    started = time.monotonic()
    thread.start()
    time.sleep(0.05)
    run(org, "Get-CASMailbox", Identity="bob")  # not held up by the delayed call
    assert not done and time.monotonic() - started < 0.9
    thread.join()
    assert done[0] - started >= 1.0
    org.inject("Get-CASMailbox", boom)
    org.clear_faults()
    assert run(org, "Get-CASMailbox", Identity="alice")


def test_many_threads_at_once() -> None:
    org = Organisation.generate(mailboxes=200, devices=400, seed=5)
    errors: list[BaseException] = []
    idents = [d.identity for d in org.store.devices()]

    def work(part: int) -> None:
        try:
            session = SessionState()
            for ident in idents[part::8]:
                run(org, "Clear-MobileDevice", session, Identity=ident, Confirm=False)
                run(org, "Get-CASMailbox", session, ResultSize="Unlimited")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert all(d.status == "DeviceWipePending" for d in org.store.devices())


def test_generate_is_fast_lean_and_deterministic() -> None:
    started = time.perf_counter()
    org = Organisation.generate(mailboxes=50_000, devices=100_000, seed=7,
                                domains=("corp.example.com", "branch.example.com"))
    assert time.perf_counter() - started < 10
    assert org.counts() == {"mailboxes": 50_000, "devices": 100_000, "policies": 3}
    shared = [same for same in org.store.devices_by_id.values() if len(same) > 1]
    assert 300 < len(shared) < 2000  # about one phone in a hundred syncs a second mailbox
    assert all(len({d.mailbox.identity for d in same}) == len(same) for same in shared)
    assert len(run(org, "Get-CASMailbox", ResultSize="Unlimited")) == 25_000  # the current domain
    twin = Organisation.generate(mailboxes=300, devices=600, seed=7)
    other = Organisation.generate(mailboxes=300, devices=600, seed=7)
    assert [d.identity for d in twin.store.devices()] == [d.identity for d in other.store.devices()]
    sample = next(iter(org.store.mailboxes.values()))
    started = time.perf_counter()
    for _ in range(1000):
        run(org, "Get-MobileDeviceStatistics", Mailbox=sample.identity)
    assert time.perf_counter() - started < 2  # by mailbox: O(its devices), not a scan


# ---- the in-process runner ------------------------------------------------------------------


async def test_local_runner_probes_once_and_sends_values_verbatim() -> None:
    for naming in Naming:
        org = Organisation(naming=naming)
        org.add_mailbox("alice")
        dev = org.add_device("alice", "ApplX")
        runner = LocalOrgRunner(org, principal=SVC)
        assert await runner.naming() is naming and await runner.naming() is naming
        assert [call.name for call in org.calls] == ["Get-Command"]
        await runner.run(c.clear_device(dev))
        assert org.calls[-1].name == c.clear_device(dev).name(naming)
        assert org.calls[-1].params == {"Identity": dev, "Confirm": False}
        with pytest.raises(ObjectNotFound) as info:
            await runner.run(c.set_cas_mailbox("alice", policy=HOSTILE))
        assert org.calls[-1].params == {"Identity": "alice", "ActiveSyncMailboxPolicy": HOSTILE}
        assert info.value.category == "ObjectNotFound" and info.value.server == "local"
        [h] = runner.health()
        assert h.connected and h.last_error_reason == "not_found"
        await runner.close()
        with pytest.raises(ExchangeUnavailable):
            await runner.run(c.get_accepted_domain())


async def test_local_runner_batch_runs_every_statement_then_raises_the_first_error() -> None:
    org = Organisation(domains=("corp.example.com", "branch.example.com"))
    org.add_mailbox("carol", domain="branch.example.com")
    runner = LocalOrgRunner(org, principal=SVC, naming_probe=False)
    with pytest.raises(ObjectNotFound):
        await runner.run_batch([c.get_cas_mailbox(identity="carol"), c.new_policy("Later", {})])
    assert org.policy("Later") is not None  # the statement after the error still ran
    out = await runner.run_batch([c.set_ad_server_settings(view_entire_forest=True),
                                  c.get_cas_mailbox(identity="carol"), c.get_accepted_domain()])
    assert [parse_mailbox(out[0]).name, out[1]["Name"]] == ["carol", "corp.example.com"]
    assert "Get-Command" not in {call.name for call in org.calls}  # no probe with naming_probe=False


async def test_local_runner_maps_permissions_and_timeouts() -> None:
    org = Organisation(permissions={SVC: {"Get-CASMailbox"}})
    runner = LocalOrgRunner(org, principal=SVC)
    assert await runner.naming() is Naming.EXCHANGE_2010  # the probe finds no 2013 name it may run
    with pytest.raises(CmdletNotPermitted) as info:
        await runner.run(c.get_device_statistics(mailbox="alice"))
    assert info.value.cmdlet == "Get-ActiveSyncDeviceStatistics"
    org.delay("Get-CASMailbox", 1.5)
    started = time.monotonic()
    with pytest.raises(ExchangeTimeout):
        await runner.run(c.get_cas_mailbox(), limit_seconds=0.1)
    assert time.monotonic() - started < 1.2
    org.inject("Get-CASMailbox", ExchangeFault("odd", error_id="X,Y", category="WriteError"))
    with pytest.raises(CmdletFailed) as failed:
        await runner.run(c.get_cas_mailbox())
    assert (failed.value.error_id, failed.value.category) == ("X,Y", "WriteError")


async def test_local_runner_policies_on_both_namings() -> None:
    for naming in Naming:
        org = Organisation(naming=naming)
        runner = LocalOrgRunner(org, principal=SVC)
        settings = PolicySettings(password_required=True, min_password_length=6, inactivity_lock_seconds=300)
        [out] = await runner.run(c.new_policy(HOSTILE, settings.to_parameters()))
        created = parse_policy(out)
        assert created.name == HOSTILE and created.settings.password_required is True
        assert created.settings.min_password_length == 6 and created.settings.inactivity_lock_seconds == 300
        await runner.run(c.set_policy(HOSTILE, PolicySettings(min_password_length=8).to_parameters(
            only_set=True)))
        [again] = await runner.run(c.get_policy(HOSTILE))
        assert parse_policy(again).settings.min_password_length == 8
        assert org.calls[-2].name == c.set_policy(HOSTILE, {}).name(naming)
        await runner.run(c.remove_policy(HOSTILE))
        assert org.policy(HOSTILE) is None


def test_a_mailbox_without_activesync_refuses_its_phone(org: Organisation) -> None:
    ident = run(org, device_name(org), Mailbox="alice")[0].properties["Identity"]
    run(org, "Set-CASMailbox", Identity="alice", ActiveSyncEnabled=False)
    run(org, "Clear-ActiveSyncDevice", Identity=ident, Confirm=False)
    dev = org.device(ident)
    assert dev is not None and dev.last_success_sync is not None
    last = dev.last_success_sync
    time.sleep(0.01)
    assert org.device_syncs("ApplF17XK1JXHG7F") == 0
    assert dev.status == "DeviceWipePending" and dev.wipe_sent is None  # the wipe never reached it
    assert dev.last_success_sync == last
    assert dev.last_sync_attempt is not None and dev.last_sync_attempt > last
    run(org, "Set-CASMailbox", Identity="alice", ActiveSyncEnabled=True)
    assert org.device_syncs("ApplF17XK1JXHG7F") == 1
    assert dev.status == "DeviceWipeSucceeded"
