"""PowerShell error records as Exchange writes them, mapped to the EAS errors (mdm/eas/faults.py)."""

from __future__ import annotations

import pytest

from mdm.eas.errors import CmdletFailed, CmdletNotPermitted, ObjectNotFound
from mdm.eas.faults import MAX_MESSAGE, clean_message, fault_error
from tests.engines import ENGINE_FREE

pytestmark = ENGINE_FREE

NOT_FOUND_MSG = (
    "[Server=CAS1,RequestId=5d8e2f1a-3c4b-4e6f-9a1b-2c3d4e5f6a7b,TimeStamp=12/3/2026 3:51:00 PM] "
    "[FailureCategory=Cmdlet-ManagementObjectNotFoundException] The operation couldn't be "
    "performed because object 'corp.example.com/Users/alice' couldn't be found on "
    "'DC1.corp.example.com'."
)


def test_command_not_found_by_error_id_is_not_permitted() -> None:
    err = fault_error(
        cmdlet="Clear-ActiveSyncDevice",
        message="The term 'Clear-ActiveSyncDevice' is not recognized as the name of a cmdlet, "
                "function, script file, or operable program.",
        error_id="CommandNotFoundException", category="ObjectNotFound", server="cas1")
    assert type(err) is CmdletNotPermitted
    assert err.cmdlet == "Clear-ActiveSyncDevice"
    assert err.reason == "not_permitted" and not err.transient
    assert err.server == "cas1"


def test_command_not_found_by_exception_type_is_not_permitted() -> None:
    err = fault_error(cmdlet="Get-MobileDeviceStatistics", message="not recognized",
                      exception_type="System.Management.Automation.CommandNotFoundException")
    assert type(err) is CmdletNotPermitted


@pytest.mark.parametrize("category,exception_type", [
    ("PermissionDenied", ""),
    ("SecurityError", ""),
    ("NotSpecified", "System.UnauthorizedAccessException"),
    ("WriteError", "Microsoft.Exchange.Data.Directory.OperationRequiresPermissionException"),
])
def test_access_denied_is_not_permitted(category: str, exception_type: str) -> None:
    err = fault_error(cmdlet="Set-CASMailbox", message="Access is denied.", category=category,
                      exception_type=exception_type)
    assert type(err) is CmdletNotPermitted


def test_management_object_not_found_by_category() -> None:
    err = fault_error(
        cmdlet="Get-MobileDeviceStatistics", message=NOT_FOUND_MSG,
        error_id="6F8A1B2C,Microsoft.Exchange.Management.Tasks.GetMobileDeviceStatistics",
        category="ObjectNotFound", target="corp.example.com/Users/alice")
    assert type(err) is ObjectNotFound
    assert err.reason == "not_found"
    assert err.error_id == "6F8A1B2C,Microsoft.Exchange.Management.Tasks.GetMobileDeviceStatistics"
    assert err.category == "ObjectNotFound"
    assert err.target == "corp.example.com/Users/alice"
    assert "couldn't be found" in err.message


def test_management_object_not_found_by_exception_type_only() -> None:
    err = fault_error(
        cmdlet="Remove-ActiveSyncDevice", message=NOT_FOUND_MSG,
        error_id="A1B2C3D4,Microsoft.Exchange.Management.Tasks.RemoveMobileDevice",
        category="NotSpecified",
        exception_type="Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException")
    assert type(err) is ObjectNotFound


def test_ambiguous_identity_is_a_failure_not_not_found() -> None:
    err = fault_error(
        cmdlet="Set-CASMailbox",
        message="The operation couldn't be performed because 'alice' matches multiple entries.",
        error_id="9C3E5A71,Microsoft.Exchange.Management.RecipientTasks.SetCASMailbox",
        category="InvalidArgument",
        exception_type="Microsoft.Exchange.Configuration.Tasks.ManagementObjectAmbiguousException")
    assert type(err) is CmdletFailed
    assert not isinstance(err, ObjectNotFound)
    assert err.category == "InvalidArgument"


def test_other_error_records_are_cmdlet_failed_with_details() -> None:
    err = fault_error(
        cmdlet="New-ActiveSyncMailboxPolicy",
        message="ActiveSync mailbox policy \"Strict\" already exists.",
        error_id="B7F2A0C4,Microsoft.Exchange.Management.Tasks.NewMobileMailboxPolicy",
        category="WriteError", target="Strict", server="cas2")
    assert type(err) is CmdletFailed
    assert err.reason == "cmdlet_error" and not err.transient
    assert (err.error_id, err.category, err.target) == (
        "B7F2A0C4,Microsoft.Exchange.Management.Tasks.NewMobileMailboxPolicy", "WriteError", "Strict")
    assert str(err).endswith("(server cas2)")


def test_parameter_binding_error_is_cmdlet_failed() -> None:
    err = fault_error(
        cmdlet="Get-CASMailbox",
        message="A parameter cannot be found that matches parameter name 'Bogus'.",
        error_id="NamedParameterNotFound,Get-CASMailbox", category="InvalidArgument",
        exception_type="System.Management.Automation.ParameterBindingException")
    assert type(err) is CmdletFailed
    assert err.category == "InvalidArgument"


def test_message_is_trimmed_and_stripped_of_control_characters() -> None:
    raw = "bad\x1b[31m thing\r\n\tand\x00 more " + "x" * 2000
    err = fault_error(cmdlet="Get-CASMailbox", message=raw, target="t\x07arget")
    assert len(err.message) <= MAX_MESSAGE
    assert err.message.endswith("…")
    assert not any(ord(c) < 32 or 0x7F <= ord(c) <= 0x9F for c in err.message)
    assert err.message.startswith("bad [31m thing and more x")
    assert isinstance(err, CmdletFailed) and err.target == "t arget"


def test_empty_message_gets_a_useful_one() -> None:
    err = fault_error(cmdlet="Get-AcceptedDomain", message="  \n ")
    assert err.message == "Get-AcceptedDomain failed"


def test_clean_message_keeps_ordinary_text() -> None:
    assert clean_message("x'; Remove-Mailbox -Identity * #") == "x'; Remove-Mailbox -Identity * #"
    assert clean_message("a" * 10, limit=5) == "aaaa…"
