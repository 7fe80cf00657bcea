"""End to end over real TLS sockets: an administrator enrolls a user, the simulated iPhone downloads
the one-time profile from the web listener, verifies it, installs the identity, checks in on the
iOS listener (Mdm-Signature or mutual TLS) and answers the commands the administrator sends through
the admin API. Nothing on the server side is imitated."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from enroll_support import APNS_TOML

from mdm.config import Config
from mdm.server.runtime import Server
from mdm.sim.device import DeviceGone, SimulatedDevice
from mdm.sim.facts import HardwareFacts
from mdm.sim.profile import ProfileError
from mdm.sim.transport import TransportError

MODES = ["signature", "mtls"]


@pytest.fixture
def extra_config() -> str:
    # Configuration profiles go out CMS-signed with the ios certificate.
    return APNS_TOML + "\n[ios_commands]\nsign_profiles = true\n"


def _roots(config: Config) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates((config.ca_dir / "root.pem").read_bytes())


async def _link(api: httpx.AsyncClient, user: str = "alice") -> str:
    response = await api.post("/api/v1/enrollments", json={"platform": "ios", "user": user})
    assert response.status_code == 201, response.text
    url = response.json()["url"]
    assert isinstance(url, str) and url.startswith("https://")
    return url


async def _enrolled(api: httpx.AsyncClient, config: Config, mode: str, seed: int = 1) -> SimulatedDevice:
    device = SimulatedDevice(
        HardwareFacts.generate(random.Random(seed)),
        mode=mode,  # type: ignore[arg-type]
        trusted_roots=_roots(config),
    )
    await device.enroll(await _link(api))
    await device.check_in()
    return device


async def _device_record(api: httpx.AsyncClient, udid: str) -> dict[str, Any]:
    response = await api.get("/api/v1/devices", params={"protocol": "ios"})
    assert response.status_code == 200, response.text
    matches = [d for d in response.json()["items"] if d["identifier"] == udid]
    assert len(matches) == 1, response.json()
    detail = await api.get(f"/api/v1/devices/{matches[0]['id']}")
    assert detail.status_code == 200
    return dict(detail.json())


async def _send(
    api: httpx.AsyncClient, device_id: int, type_: str, args: dict[str, Any] | None = None
) -> str:
    response = await api.post(
        f"/api/v1/devices/{device_id}/commands", json={"type": type_, "args": args or {}}
    )
    assert response.status_code == 201, response.text
    return str(response.json()["guid"])


async def _command(api: httpx.AsyncClient, guid: str) -> dict[str, Any]:
    response = await api.get(f"/api/v1/commands/{guid}")
    assert response.status_code == 200, response.text
    return dict(response.json())


@pytest.mark.parametrize("mode", MODES)
async def test_enroll_and_check_in(server: Server, api: httpx.AsyncClient, config: Config, mode: str) -> None:
    async with await _enrolled(api, config, mode) as device:
        assert device.profile is not None and device.profile.signed.trusted
        assert device.identity is not None
        record = await _device_record(api, device.udid)
        facts = device.state.facts
        assert record["user"] == "alice"
        assert record["serial_number"] == facts.serial_number
        assert record["os_version"] == facts.os_version and record["build_version"] == facts.build_version
        assert record["cert_serial"] == device.identity.serial_hex
        assert record["push_valid"] is True
        assert record["status"] == "ok"
        # Nothing queued yet: an idle poll gets an empty answer.
        assert (await device.poll()).commands == 0


async def test_second_download_of_the_link_is_gone(
    server: Server, api: httpx.AsyncClient, config: Config
) -> None:
    url = await _link(api)
    async with SimulatedDevice(trusted_roots=_roots(config)) as first:
        await first.enroll(url)
    async with SimulatedDevice(trusted_roots=_roots(config)) as second:
        with pytest.raises(TransportError) as err:
            await second.enroll(url)
    assert err.value.status == 410


async def test_profile_from_an_untrusted_server_is_refused(
    server: Server, api: httpx.AsyncClient, tmp_path: Path
) -> None:
    from mdm.pki.ca import CertificateAuthority

    stranger = CertificateAuthority.create(tmp_path / "stranger", rsa_bits=2048)
    url = await _link(api)
    async with SimulatedDevice(trusted_roots=[stranger.root]) as device:
        # The HTTPS download itself fails: the web listener's certificate is not from that root.
        with pytest.raises(TransportError):
            await device.enroll(url)


async def test_mutual_tls_device_without_identity_is_rejected(
    server: Server, api: httpx.AsyncClient, config: Config
) -> None:
    """A device whose certificate is not the one bound at enrollment gets 400, never 401."""
    async with await _enrolled(api, config, "signature", seed=2) as device:
        async with await _enrolled(api, config, "signature", seed=3) as other:
            assert other.transport is not None and device.transport is not None
            other.transport.identity = device.identity  # type: ignore[assignment]
            with pytest.raises(TransportError) as err:
                await other.poll()
            assert err.value.status == 400


# ---- commands sent by an administrator ------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_admin_commands_round_trip(
    server: Server, api: httpx.AsyncClient, config: Config, mode: str
) -> None:
    async with await _enrolled(api, config, mode) as device:
        record = await _device_record(api, device.udid)
        device_id = record["id"]

        lock = await _send(api, device_id, "Block")
        result = await device.poll()
        assert result.statuses == [("DeviceLock", "Acknowledged")]
        assert (await _command(api, lock))["status"] == "completed"

        refresh = await _send(api, device_id, "RefreshDeviceInfo")
        answered = dict((await device.poll()).statuses)
        for request in (
            "DeviceInformation",
            "SecurityInfo",
            "InstalledApplicationList",
            "ProfileList",
            "CertificateList",
        ):
            assert answered.get(request) == "Acknowledged", answered
        assert (await _command(api, refresh))["status"] == "completed"
        record = await _device_record(api, device.udid)
        facts = device.state.facts
        assert record["model"] == facts.product_name
        assert record["name"] == facts.device_name
        if facts.cellular:
            assert record["imei"] == facts.imei
        inventory = record["inventory"]
        assert inventory["device_info"]["values"]["OSVersion"] == "17.5.1"
        assert {a["Identifier"] for a in inventory["apps"]["items"]} >= {"com.tinyspeck.chatlyio"}
        profile_ids = [p["PayloadIdentifier"] for p in inventory["profiles"]["items"]]
        assert device.profile is not None and device.profile.identifier in profile_ids
        assert any(c.get("IsIdentity") or c.get("is_identity") for c in inventory["certificates"]["items"])

        wipe = await _send(api, device_id, "Wipe")
        result = await device.poll()
        assert result.statuses == [("EraseDevice", "Acknowledged")]
        assert device.state.wiped
        with pytest.raises(DeviceGone):
            await device.poll()
        assert (await _command(api, wipe))["status"] == "completed"
        assert (await _device_record(api, device.udid))["status"] == "wiped"


async def test_configuration_profile_install_list_remove(
    server: Server, api: httpx.AsyncClient, config: Config
) -> None:
    async with await _enrolled(api, config, "signature") as device:
        device_id = (await _device_record(api, device.udid))["id"]
        guid = await _send(
            api,
            device_id,
            "InstallConfProf",
            {
                "profile": {
                    "identifier": "com.example.restrictions",
                    "display_name": "No camera",
                    "payloads": [{"type": "restrictions", "allow_camera": False}],
                }
            },
        )
        assert (await device.poll()).statuses == [("InstallProfile", "Acknowledged")]
        assert (await _command(api, guid))["status"] == "completed"
        installed = device.state.profiles["com.example.restrictions"]
        assert installed.signer is not None  # signed by the server, signature checked by the device
        restrictions = installed.plist["PayloadContent"][0]
        assert restrictions["PayloadType"] == "com.apple.applicationaccess"
        assert restrictions["allowCamera"] is False

        await _send(api, device_id, "RefreshDeviceInfo")
        await device.poll()
        record = await _device_record(api, device.udid)
        listed = [p["PayloadIdentifier"] for p in record["inventory"]["profiles"]["items"]]
        assert "com.example.restrictions" in listed

        guid = await _send(api, device_id, "DeleteConfProf", {"identifier": "com.example.restrictions"})
        assert (await device.poll()).statuses == [("RemoveProfile", "Acknowledged")]
        assert "com.example.restrictions" not in device.state.profiles
        # Removing it again: the device reports an error, the command fails with the device's reason.
        guid = await _send(api, device_id, "DeleteConfProf", {"identifier": "com.example.restrictions"})
        assert (await device.poll()).statuses == [("RemoveProfile", "Error")]
        failed = await _command(api, guid)
        assert failed["status"] == "failed" and "not installed" in (failed["result_info"] or "")


async def test_busy_device_defers_and_command_is_offered_again(
    server: Server, api: httpx.AsyncClient, config: Config
) -> None:
    async with await _enrolled(api, config, "signature") as device:
        device_id = (await _device_record(api, device.udid))["id"]
        device.state.busy_polls = 1
        guid = await _send(api, device_id, "Raw", {"RequestType": "SecurityInfo"})
        assert (await device.poll()).statuses == [("SecurityInfo", "NotNow")]
        command = await _command(api, guid)
        assert command["status"] == "processing"
        assert (await device.poll()).statuses == [("SecurityInfo", "Acknowledged")]
        assert (await _command(api, guid))["status"] == "completed"


async def test_unsupported_and_supervised_only_requests_fail(
    server: Server, api: httpx.AsyncClient, config: Config
) -> None:
    async with await _enrolled(api, config, "signature") as device:
        device_id = (await _device_record(api, device.udid))["id"]
        locate = await _send(api, device_id, "Locate")
        statuses = (await device.poll()).statuses
        assert statuses and statuses[0][1] == "Error"
        command = await _command(api, locate)
        assert command["status"] == "failed"
        raw = await _send(api, device_id, "Raw", {"RequestType": "SetFirmwarePassword", "NewPassword": "pw"})
        # A macOS-only request: iOS does not know it.
        assert (await device.poll()).statuses == [("SetFirmwarePassword", "Error")]
        assert (await _command(api, raw))["status"] == "failed"


async def test_tampered_profile_is_not_installed(
    server: Server, api: httpx.AsyncClient, config: Config
) -> None:
    from mdm.sim.device import fetch_profile

    data = bytearray(await fetch_profile(await _link(api), _roots(config)))
    at = bytes(data).find(b"/mdm/server")
    data[at + 1] ^= 0x20
    async with SimulatedDevice(trusted_roots=_roots(config)) as device:
        with pytest.raises(ProfileError) as err:
            await device.install_enrollment(bytes(data))
        assert err.value.code == 1004
        assert device.identity is None


async def test_every_request_type_through_the_real_channel(
    server: Server, api: httpx.AsyncClient, config: Config, db: Any
) -> None:
    """Raw Apple commands queued directly (as the translator would store them): the device's answer
    to each is accepted by the command channel and recorded as completed or failed."""
    from ios_support import queue_command

    from mdm.ios import enrollment_profile as ep
    from mdm.ios.messages import to_json_safe

    profile = ep.serialize(
        {
            "PayloadType": "Configuration",
            "PayloadVersion": 1,
            "PayloadIdentifier": "com.example.vpn",
            "PayloadUUID": ep.new_uuid(),
            "PayloadDisplayName": "VPN",
            "PayloadContent": [],
        }
    )
    async with await _enrolled(api, config, "mtls") as device:
        device_id = (await _device_record(api, device.udid))["id"]
        expected = {
            "DeviceInformation": ({"Queries": ["OSVersion", "SerialNumber", "IMEI", "WiFiMAC"]}, "completed"),
            "SecurityInfo": ({}, "completed"),
            "InstalledApplicationList": ({}, "completed"),
            "ManagedApplicationList": ({}, "completed"),
            "ProfileList": ({}, "completed"),
            "CertificateList": ({}, "completed"),
            "ProvisioningProfileList": ({}, "completed"),
            "InstallProfile": ({"Payload": profile}, "completed"),
            "RemoveProfile": ({"Identifier": "com.example.unknown"}, "failed"),
            "InstallApplication": ({"iTunesStoreID": 586447913, "ManagementFlags": 1}, "completed"),
            "Settings": ({"Settings": [{"Item": "DataRoaming", "Enabled": True}]}, "completed"),
            "ApplyRedemptionCode": ({"Identifier": "com.example.x", "RedemptionCode": "AB12"}, "failed"),
            "DeviceLocation": ({}, "failed"),
            "PlayLostModeSound": ({}, "failed"),
            "DeviceLock": ({"Message": "Call IT", "PhoneNumber": "+1 555 0100"}, "completed"),
            "ClearPasscode": ({"UnlockToken": device.state.unlock_token}, "completed"),
            "FutureCommand": ({}, "failed"),
        }
        guids = {}
        for request, (keys, _) in expected.items():
            guids[request] = await queue_command(
                db, device_id, to_json_safe({"RequestType": request, **keys}), type_=request
            )
        result = await device.poll()
        assert [r for r, _ in result.statuses] == list(expected)
        for request, (_, status) in expected.items():
            command = await _command(api, guids[request])
            assert command["status"] == status, (request, command)
        assert "com.example.vpn" in device.state.profiles and "com.microsoft.Office.Word" in device.state.apps
        assert not device.state.passcode_present  # the server handed back the UnlockToken it stored
        record = await _device_record(api, device.udid)
        assert (
            record["inventory"]["device_info"]["values"]["SerialNumber"] == device.state.facts.serial_number
        )
        assert "com.microsoft.Office.Word" not in {
            a["Identifier"] for a in record["inventory"]["apps"]["items"]
        }  # listed before the install


class TestScepIdentity:
    """``enroll.identity = "scep"``: the profile carries a SCEP payload with a one-time challenge
    instead of a PKCS#12; the device generates its key and enrolls at the server's /scep."""

    @pytest.fixture
    def extra_config(self) -> str:
        return APNS_TOML + '\n[enroll]\nidentity = "scep"\n'

    @pytest.mark.parametrize("mode", MODES)
    async def test_scep_enrollment_then_check_in(
        self, server: Server, api: httpx.AsyncClient, config: Config, mode: str
    ) -> None:
        async with await _enrolled(api, config, mode, seed=11) as device:
            assert device.profile is not None and device.profile.identity_kind == "scep"
            assert device.identity is not None
            record = await _device_record(api, device.udid)
            assert record["cert_serial"] == device.identity.serial_hex
            assert record["user"] == "alice"
            assert (await device.poll()).commands == 0


async def _cli(*args: str) -> tuple[int, str, str]:
    import asyncio
    import sys

    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mdm",
        "sim",
        "ios",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    return proc.returncode or 0, out.decode(), err.decode()


async def test_sim_cli_enrolls_checks_in_and_polls(
    server: Server, api: httpx.AsyncClient, config: Config
) -> None:
    link = await _link(api)
    code, out, err = await _cli(
        "--url",
        link,
        "--ca",
        str(config.ca_dir / "root.pem"),
        "--mode",
        "mtls",
        "--polls",
        "2",
        "--interval",
        "0",
        "--seed",
        "5",
    )
    assert code == 0, err
    facts = HardwareFacts.generate(random.Random(5))
    assert f"UDID {facts.udid}" in out and "signature verified" in out and "checked in" in out
    assert "poll 2: nothing queued" in out
    await _device_record(api, facts.udid)
    # The link is spent: a second run fails with one line, no traceback.
    code, out, err = await _cli("--url", link, "--ca", str(config.ca_dir / "root.pem"))
    assert code == 1 and err.startswith("mdm: error:") and "410" in err and "Traceback" not in err


async def test_sim_cli_usage_errors(tmp_path: Path) -> None:
    code, _, err = await _cli("--url", "https://127.0.0.1:1/e/x", "--ca", str(tmp_path / "missing.pem"))
    assert code == 2 and "--ca" in err
    code, _, err = await _cli("--url", "https://127.0.0.1:1/e/x", "--polls", "-1")
    assert code == 2


@pytest.mark.parametrize("mode", MODES)
async def test_remove_unenrolls_and_checks_out(
    server: Server, api: httpx.AsyncClient, config: Config, mode: str
) -> None:
    async with await _enrolled(api, config, mode, seed=21) as device:
        device_id = (await _device_record(api, device.udid))["id"]
        guid = await _send(api, device_id, "Remove")
        assert (await device.poll()).statuses == [("RemoveProfile", "Acknowledged")]
        assert device.state.unenrolled
        assert (await _command(api, guid))["status"] == "completed"
        assert (await _device_record(api, device.udid))["status"] == "unmanaged"
        events = (await api.get("/api/v1/events", params={"device": device_id})).json()["items"]
        assert "device_unenrolled" in {e["type"] for e in events}  # the device's CheckOut arrived
        with pytest.raises(DeviceGone):
            await device.poll()
