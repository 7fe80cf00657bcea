"""A PowerShell error record, mapped to the ``errors`` the EAS domain understands.

Exchange reports a failed cmdlet as an ErrorRecord: a message (often prefixed with
``[Server=CAS1,RequestId=...,TimeStamp=...]``), a FullyQualifiedErrorId (``"<hex>,<task type>"``
or ``"CommandNotFoundException"``), a CategoryInfo.Category (``ObjectNotFound``,
``InvalidArgument``, ``PermissionDenied``...) and the exception's .NET type name. Both the PSRP
runner and the in-process fake runner hand those pieces to ``fault_error``, so one table decides
what is "not found", "not permitted" or any other cmdlet failure.

Messages come from the server: they are trimmed and stripped of control characters before they
reach logs, events and the command log.
"""

from __future__ import annotations

import re

from mdm.eas.errors import CmdletFailed, CmdletNotPermitted, ExchangeError, ObjectNotFound

MAX_MESSAGE = 500
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]")
_SPACES = re.compile(r"\s+")

# Exception type names (the last dotted part, lower-cased) and what they mean.
_NOT_FOUND_TYPES = frozenset({
    "managementobjectnotfoundexception",
    "objectnotfoundexception",
    "recipientnotfoundexception",
    "mailboxnotfoundexception",
    "itemnotfoundexception",
})
_NOT_PERMITTED_TYPES = frozenset({
    "commandnotfoundexception",
    "unauthorizedaccessexception",
    "accessdeniedexception",
    "operationrequirespermissionexception",
})
_NOT_PERMITTED_CATEGORIES = frozenset({"permissiondenied", "securityerror"})


def clean_message(text: str, *, limit: int = MAX_MESSAGE) -> str:
    """One line without control characters, at most ``limit`` characters (with an ellipsis)."""
    flat = _SPACES.sub(" ", _CONTROL.sub(" ", text)).strip()
    if len(flat) > limit:
        flat = flat[: limit - 1].rstrip() + "…"
    return flat


def _type_tail(name: str) -> str:
    """``Microsoft.Exchange....ManagementObjectNotFoundException`` -> lower-cased last part."""
    return name.strip().rsplit(".", 1)[-1].lower()


def _id_parts(error_id: str) -> set[str]:
    """A FullyQualifiedErrorId ``"6F8A1B2C,Microsoft.Exchange.Management.Tasks.X"`` or
    ``"CommandNotFoundException"`` -> the lower-cased last dotted part of each comma part."""
    return {_type_tail(part) for part in error_id.split(",") if part.strip()}


def fault_error(*, cmdlet: str, message: str, error_id: str = "", category: str = "",
                exception_type: str = "", target: str | None = None,
                server: str | None = None) -> ExchangeError:
    """The ``ExchangeError`` for one PowerShell error record written by ``cmdlet``.

    - CommandNotFoundException (error id or exception type), category PermissionDenied /
      SecurityError, or an access-denied exception -> ``CmdletNotPermitted`` (Exchange RBAC hides
      a cmdlet the account may not run, so "not found" for a *command* means "not permitted");
    - category ObjectNotFound, or a *NotFoundException* for an object -> ``ObjectNotFound``
      (an ambiguous identity, ManagementObjectAmbiguousException, is InvalidArgument: it is
      ``CmdletFailed``, never "not found");
    - anything else -> ``CmdletFailed`` with its error id, category and target.
    """
    text = clean_message(message) or f"{cmdlet} failed"
    err_id = clean_message(error_id, limit=200)
    cat = clean_message(category, limit=60)
    exc_tail = _type_tail(exception_type) if exception_type else ""
    ids = _id_parts(err_id)
    clean_target = clean_message(target, limit=200) if target is not None else None

    if "commandnotfoundexception" in ids or exc_tail == "commandnotfoundexception":
        return CmdletNotPermitted(text, cmdlet=cmdlet, server=server)
    if cat.lower() in _NOT_PERMITTED_CATEGORIES or exc_tail in _NOT_PERMITTED_TYPES:
        return CmdletNotPermitted(text, cmdlet=cmdlet, server=server)
    ambiguous = exc_tail.startswith("managementobjectambiguous") or any(
        part.startswith("managementobjectambiguous") for part in ids)
    if not ambiguous and (cat.lower() == "objectnotfound" or exc_tail in _NOT_FOUND_TYPES
                          or ids & _NOT_FOUND_TYPES):
        return ObjectNotFound(text, cmdlet=cmdlet, error_id=err_id, category=cat or "ObjectNotFound",
                              target=clean_target, server=server)
    return CmdletFailed(text, cmdlet=cmdlet, error_id=err_id, category=cat,
                        target=clean_target, server=server)
