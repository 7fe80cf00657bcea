"""What crosses PSRP: parameter values as the server deserializes them, output objects and error
records as the client reads them. The CLIXML on both sides is produced by the real libraries
(psrpcore, the server side the contract fake uses; pypsrp, the client), never written by hand,
except where a test pins what Windows PowerShell itself writes (7 fractional digits, offsets)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import psrpcore.types as ps
import pytest
from pypsrp.complex_objects import ObjectMeta
from pypsrp.messages import ErrorRecordMessage
from pypsrp.serializer import Serializer

from mdm.eas.records import parse_device_statistics, parse_mailbox
from mdm.eas.runner_convert import (
    RecordSerializer,
    error_info,
    format_duration,
    parameter_value,
    parse_datetime,
    parse_duration,
    to_record,
    type_names,
)
from tests.engines import ENGINE_FREE

pytestmark = ENGINE_FREE


def _server_object(type_name: str, props: dict[str, Any], to_string: str = "") -> ET.Element:
    obj = ps.PSObject()
    obj.PSObject.type_names = [type_name, "System.Object"]
    for key, value in props.items():
        ps.add_note_property(obj, key, value)
    if to_string:
        obj.PSObject.to_string = to_string
    return ps.serialize(obj, None)  # type: ignore[arg-type]  # no SecureString: no cipher needed


def _client_read(element: ET.Element) -> Any:
    return RecordSerializer().deserialize(element)


def test_an_exchange_object_becomes_a_typed_record() -> None:
    seen = datetime(2024, 5, 1, 10, 0, 0, 123456, tzinfo=UTC)
    element = _server_object("Microsoft.Exchange.Data.Directory.Management.CASMailbox", {
        "Identity": "corp.example.com/Users/o'brien; $(Get-Date)",
        "ActiveSyncEnabled": True,
        "MaxItems": ps.PSInt(42),
        "Big": ps.PSInt64(2**40),
        "LastSuccessSync": seen,
        "Interval": timedelta(minutes=15),
        "Aliases": ps.PSList(["a", "b"]),
        "Nothing": None,
        "Guid": ps.PSGuid("6f8a1b2c-0000-4000-8000-000000000001"),
    }, to_string="o'brien")
    obj = _client_read(element)
    assert type_names(obj)[0] == "Microsoft.Exchange.Data.Directory.Management.CASMailbox"
    record = to_record(obj)
    assert record == {
        "Identity": "corp.example.com/Users/o'brien; $(Get-Date)",
        "ActiveSyncEnabled": True,
        "MaxItems": 42,
        "Big": 2**40,
        "LastSuccessSync": seen,
        "Interval": timedelta(minutes=15),
        "Aliases": ["a", "b"],
        "Nothing": None,
        "Guid": "6f8a1b2c-0000-4000-8000-000000000001",
    }


def test_stock_pypsrp_would_have_left_dates_as_text() -> None:
    """Why RecordSerializer exists: the stock serializer gives the raw DateTime string."""
    element = _server_object("X", {"When": datetime(2024, 5, 1, tzinfo=UTC)})
    stock = Serializer().deserialize(element)
    assert isinstance(stock.extended_properties["When"], str)
    assert isinstance(to_record(_client_read(element))["When"], datetime)


def test_an_enum_value_is_its_name() -> None:
    element = _server_object("X", {"Category": ps.ErrorCategory.ObjectNotFound})
    assert to_record(_client_read(element)) == {"Category": "ObjectNotFound"}


def test_adapted_properties_win_over_extended_ones() -> None:
    obj = ps.PSObject()
    obj.PSObject.type_names = ["Y", "System.Object"]
    obj.PSObject.adapted_properties.append(ps.PSNoteProperty("Name", "adapted"))
    ps.add_note_property(obj, "Name2", "extended")
    record = to_record(_client_read(ps.serialize(obj, None)))  # type: ignore[arg-type]
    assert record == {"Name": "adapted", "Name2": "extended"}


def test_a_primitive_output_is_a_value_record() -> None:
    element = ps.serialize(ps.PSString("just text"), None)  # type: ignore[arg-type]
    record = to_record(_client_read(element))
    assert record == {"Value": "just text"}
    with pytest.raises(Exception, match="Identity"):
        parse_mailbox(record)


@pytest.mark.parametrize(("text", "expected"), [
    ("2024-05-01T10:00:00.1234567Z", datetime(2024, 5, 1, 10, 0, 0, 123456, tzinfo=UTC)),
    ("2024-05-01T12:00:00+02:00", datetime(2024, 5, 1, 10, 0, tzinfo=UTC)),
    ("2024-05-01T10:00:00", datetime(2024, 5, 1, 10, 0, tzinfo=UTC)),
    ("2024-05-01T10:00:00.5-05:30", datetime(2024, 5, 1, 15, 30, 0, 500000, tzinfo=UTC)),
])
def test_datetime_forms_windows_writes(text: str, expected: datetime) -> None:
    parsed = parse_datetime(text)
    assert parsed == expected
    assert isinstance(parsed, datetime) and parsed.tzinfo is UTC


def test_not_a_datetime_stays_text() -> None:
    assert parse_datetime("tomorrow") == "tomorrow"
    assert parse_duration("00:15:00") == "00:15:00"
    assert parse_duration("P") == "P"


@pytest.mark.parametrize("span", [
    timedelta(minutes=15), timedelta(days=1, microseconds=500000), timedelta(0),
    timedelta(seconds=-30), timedelta(seconds=10), timedelta(days=730), timedelta(hours=1, seconds=1),
])
def test_a_timespan_reaches_the_server_as_that_timespan(span: timedelta) -> None:
    """pypsrp serializes what parameter_value gives it; psrpcore (the server side) reads it."""
    element = Serializer().serialize(parameter_value(span))
    assert element is not None and element.tag == "TS"
    assert ps.deserialize(element, None) == span  # type: ignore[arg-type]
    assert parse_duration(format_duration(span)) == span


@pytest.mark.parametrize(("value", "tag"), [
    ("x'; Remove-Mailbox -Identity * #", "S"), ("$(Get-Date)", "S"), (True, "B"), (False, "B"),
    (7, "I32"), (2**40, "I64"), (["a;b", "$(c)"], "Obj"), (None, "Nil"),
])
def test_parameter_values_arrive_as_typed_plain_values(value: Any, tag: str) -> None:
    element = Serializer().serialize(parameter_value(value))
    assert element is not None and element.tag == tag
    back = ps.deserialize(element, None)  # type: ignore[arg-type]
    assert (list(back) if isinstance(back, list) else back) == value


def test_a_parameter_value_of_another_type_is_refused() -> None:
    with pytest.raises(TypeError):
        parameter_value(1.5)  # type: ignore[arg-type]


def test_device_statistics_parse_from_the_wire_form() -> None:
    element = _server_object("Microsoft.Exchange.Data.Directory.Management.MobileDeviceConfiguration", {
        "Identity": "corp.example.com/Users/ann/ExchangeActiveSyncDevices/iPhone§ABC123",
        "DeviceID": "ABC123", "DeviceType": "iPhone", "DeviceModel": "iPhone15,2",
        "DeviceOS": "iOS 17.1 21B74", "Status": ps.PSString("DeviceWipePending"),
        "LastSuccessSync": datetime(2024, 5, 1, 10, 0, tzinfo=timezone(timedelta(hours=2))),
        "DeviceWipeRequestTime": datetime(2024, 5, 2, tzinfo=UTC), "DeviceWipeAckTime": None,
    })
    stats = parse_device_statistics(to_record(_client_read(element)))
    assert stats.device_id == "ABC123"
    assert stats.last_sync == datetime(2024, 5, 1, 8, 0, tzinfo=UTC)
    assert stats.wipe_state.value == "pending"


def _server_error(**kwargs: Any) -> ErrorRecordMessage:
    record = ps.ErrorRecord(**kwargs)
    element = ps.serialize(record, None)  # type: ignore[arg-type]
    meta = ObjectMeta("Obj", object=ErrorRecordMessage)
    return RecordSerializer().deserialize(element, meta)  # type: ignore[no-any-return]


def test_an_error_record_gives_message_id_category_type_and_target() -> None:
    exc = ps.NETException(Message="The operation couldn't be performed because object 'x' couldn't be found.")
    not_found = "Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException"
    exc.PSObject.type_names.insert(0, not_found)
    record = _server_error(
        Exception=exc, TargetObject="corp.example.com/Users/x",
        FullyQualifiedErrorId="6F8A1B2C,Microsoft.Exchange.Management.Tasks.GetMobileDeviceStatistics",
        CategoryInfo=ps.ErrorCategoryInfo(Category=ps.ErrorCategory.ObjectNotFound,
                                          Reason="ManagementObjectNotFoundException",
                                          TargetName="x"),
    )
    info = error_info(record)
    assert info.message.startswith("The operation couldn't be performed")
    assert info.error_id.endswith("GetMobileDeviceStatistics")
    assert info.category == "ObjectNotFound"
    assert info.exception_type == not_found
    assert info.target == "x"


def test_an_error_record_without_extras_still_has_a_message() -> None:
    record = _server_error(Exception=ps.NETException(Message="boom"), FullyQualifiedErrorId="Boom",
                           CategoryInfo=ps.ErrorCategoryInfo())
    info = error_info(record)
    assert (info.message, info.error_id, info.category) == ("boom", "Boom", "NotSpecified")


# ---- the fast reader of output messages -------------------------------------------------------


def _both_ways(element: ET.Element) -> tuple[Any, Any]:
    """(the fast reader's object, pypsrp's own): a PIPELINE_OUTPUT message arrives as a string."""
    text = ET.tostring(element, encoding="unicode")
    fast = RecordSerializer().deserialize(text)
    stock = RecordSerializer().deserialize(ET.fromstring(text))
    return fast, stock


@pytest.mark.parametrize("props", [
    {"Identity": "corp/Users/o'brien; $(Get-Date)\nline two", "ActiveSyncEnabled": False,
     "Count": ps.PSInt(7), "Big": ps.PSInt64(2**40), "When": datetime(2024, 5, 1, 10, 0, tzinfo=UTC),
     "Span": timedelta(days=1, seconds=1.5), "Nothing": None, "Tags": ps.PSList(["a", "b", "a"]),
     "Guid": ps.PSGuid("6f8a1b2c-0000-4000-8000-000000000001")},
    {"DeviceID": "ApplF17X", "DeviceOS": "iOS 17.1 21B74", "DeviceWipeAckTime": None,
     "Status": "DeviceOk", "LastSuccessSync": datetime(2026, 11, 30, 8, 0, 1, 250000, tzinfo=UTC),
     "Empty": ""},
])
def test_the_fast_reader_reads_what_pypsrp_reads(props: dict[str, Any]) -> None:
    fast, stock = _both_ways(_server_object("Microsoft.Exchange.Some.Type", props, to_string="x"))
    assert type(fast) is type(stock)
    assert to_record(fast) == to_record(stock)
    assert type_names(fast) == type_names(stock)
    assert fast.to_string == stock.to_string == "x"


def test_the_fast_reader_reads_a_nested_object_as_its_string() -> None:
    """pypsrp's generic path leaves a nested object of an unknown type as its raw XML; the fast
    reader gives its ToString (an enum's name)."""
    inner = ps.PSObject()
    inner.PSObject.type_names = ["Microsoft.Exchange.Data.DeviceAccessState", "System.Enum"]
    inner.PSObject.to_string = "Quarantined"
    fast, stock = _both_ways(_server_object("T", {"DeviceAccessState": inner,
                                                   "Names": ps.PSList(["x"])}))
    assert to_record(fast) == {"DeviceAccessState": "Quarantined", "Names": ["x"]}
    assert to_record(stock)["DeviceAccessState"].startswith("<Obj")


def test_garbage_output_falls_back_to_pypsrp() -> None:
    assert RecordSerializer().deserialize("<Obj><Props><S N='a'>unterminated") == (
        Serializer().deserialize("<Obj><Props><S N='a'>unterminated"))
