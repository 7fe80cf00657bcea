"""``inventory.blind_update`` (what an inventory answer writes without reading the device's row,
``mdm.core.store_facts_direct``) leaves every device row as ``answer_update`` on the row read
does, or declines: the one-statement answer and the transactional one cannot disagree."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from mdm.ios import inventory

TEXTS = st.sampled_from([
    None, "", "iPhone15,2", "iPad8,1", "iPad13,4", "AppleTV5,3", "Watch6,1", "MacBookPro18,1", "Foo1,1",
    "12.4", "13.1", "17.6", "x" * 300,
])
VALUES = st.one_of(TEXTS, st.integers(0, 20), st.booleans())
FACT_KEYS = ("DeviceName", "ProductName", "Model", "OSVersion", "BuildVersion", "SerialNumber", "IMEI",
             "PhoneNumber", "MEID", "ModelName", "BatteryLevel")
ATTRIBUTE_KEYS = st.sampled_from(["meid", "topic", "model_name"])
ROWS = st.fixed_dictionaries(
    {column: TEXTS for column in inventory.FACT_COLUMNS if column != "attributes"}
    | {"attributes": st.one_of(st.none(), st.dictionaries(ATTRIBUTE_KEYS, TEXTS))}
)
ANSWERS = st.dictionaries(st.sampled_from(FACT_KEYS), VALUES)


def _blindly(row: dict[str, Any], update: inventory.BlindUpdate) -> dict[str, Any]:
    """The row after the statement: columns set, attributes merged as the database merges them."""
    out = {**row, **update.columns}
    if update.attributes is not None:
        stored = row["attributes"] if isinstance(row["attributes"], dict) else {}
        out["attributes"] = {**stored, **update.attributes}
    return out


@settings(max_examples=400, deadline=None)
@given(row=ROWS, facts=ANSWERS)
def test_device_information_blindly_or_not_at_all(row: dict[str, Any], facts: dict[str, Any]) -> None:
    result = {"QueryResponses": facts}
    read = inventory.answer_update(row, "DeviceInformation", result)
    blind = inventory.blind_update("DeviceInformation", result)
    assert read is not None
    if all(isinstance(facts.get(key), str) and facts[key] for key in ("ProductName", "OSVersion")):
        assert blind is not None  # a full answer (the simulator's, a real device's) is never declined
    if blind is None:
        return
    assert _blindly(row, blind) == {**row, **read.changes}
    assert (blind.part, blind.count) == (read.part, read.count)
    assert {k: v for k, v in blind.entry.items() if k != "refreshed_at"} == {
        k: v for k, v in read.entry.items() if k != "refreshed_at"
    }


def test_an_answer_that_leaves_the_os_name_to_the_stored_row_is_declined() -> None:
    assert inventory.blind_update("DeviceInformation", {"QueryResponses": {"DeviceName": "n"}}) is None
    ipad = {"ProductName": "iPad8,1"}  # iOS or iPadOS by the stored OS version
    assert inventory.blind_update("DeviceInformation", {"QueryResponses": ipad}) is None
    phone = inventory.blind_update("DeviceInformation", {"QueryResponses": {"ProductName": "iPhone15,2"}})
    assert phone is not None and phone.columns == {"model": "iPhone15,2", "os_name": "iOS"}
    assert inventory.blind_update("DeviceLock", {}) is None


@given(row=ROWS, listed=st.lists(st.sampled_from(["com.a", "com.b", None]), max_size=3), mdm=st.booleans())
def test_profile_lists_blindly(row: dict[str, Any], listed: list[str | None], mdm: bool) -> None:
    kind = "com.apple.mdm" if mdm else "com.apple.wifi"
    profiles = [{"PayloadIdentifier": i, "PayloadContent": [{"PayloadType": kind}]} for i in listed]
    read = inventory.answer_update(row, "ProfileList", {"ProfileList": profiles})
    blind = inventory.blind_update("ProfileList", {"ProfileList": profiles})
    assert read is not None and blind is not None
    assert _blindly(row, blind) == {**row, **read.changes}
