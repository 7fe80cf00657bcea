"""WS-Management SOAP for the Exchange fake: parse what pypsrp sends, answer as Windows does.

Only the shell operations PowerShell Remoting uses: Create (a RunspacePool shell with its
creationXml), Command (a pipeline), Send, Receive, Signal, Delete and Get (pypsrp's
``is_alive``). Faults carry the WSManFault code Windows uses, which is what clients key on:
2150858843 (``w:InvalidSelectors``, the shell is gone, for example after the server restarted) and
2150858793 (``w:TimedOut``, a Receive found no output within its OperationTimeout).
"""

from __future__ import annotations

import base64
import re
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass

NS = {
    "s": "http://www.w3.org/2003/05/soap-envelope",
    "wsa": "http://schemas.xmlsoap.org/ws/2004/08/addressing",
    "wsman": "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd",
    "wsmanfault": "http://schemas.microsoft.com/wbem/wsman/1/wsmanfault",
    "rsp": "http://schemas.microsoft.com/wbem/wsman/1/windows/shell",
    "wst": "http://schemas.xmlsoap.org/ws/2004/09/transfer",
    "pwsh": "http://schemas.microsoft.com/powershell",
    "xml": "http://www.w3.org/XML/1998/namespace",
}
for _prefix, _uri in NS.items():
    if _prefix != "xml":
        ET.register_namespace(_prefix, _uri)

TRANSFER = "http://schemas.xmlsoap.org/ws/2004/09/transfer/"
SHELL = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/"
ACTIONS = {
    TRANSFER + "Create": "Create", TRANSFER + "Delete": "Delete", TRANSFER + "Get": "Get",
    SHELL + "Command": "Command", SHELL + "Send": "Send", SHELL + "Receive": "Receive",
    SHELL + "Signal": "Signal",
}
FAULT_ACTION = "http://schemas.dmtf.org/wbem/wsman/1/wsman/fault"
ANONYMOUS = "http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous"
POWERSHELL_URI = "http://schemas.microsoft.com/powershell/"
SIGNAL_TERMINATE = SHELL + "signal/terminate"
SIGNAL_CTRL_C = "powershell/signal/crtl_c"  # sic: this is the URI PowerShell uses
_DURATION = re.compile(r"^PT(\d+(?:\.\d+)?)S$")

# Windows' codes (decimal, as WSManFault/@Code carries them).
SHELL_NOT_FOUND = 2150858843       # 0x8033805B, w:InvalidSelectors
TIMED_OUT = 2150858793             # 0x80338029, w:TimedOut
BAD_RESOURCE_URI = 2150858770      # 0x80338012, w:InvalidResourceURI (unknown configuration)
ACTION_NOT_SUPPORTED = 2150858763  # 0x8033800B, wsa:ActionNotSupported
INVALID_MESSAGE = 2150858817       # 0x80338041, w:InvalidMessageInformationHeader
PIPELINE_NOT_FOUND = 2150859047    # 0x80338127, the command id is unknown


class WSManFault(Exception):
    """A SOAP fault answer (HTTP 500)."""

    def __init__(self, code: int, subcode: str, message: str, *, sender: bool = True) -> None:
        super().__init__(message)
        self.code = code
        self.subcode = subcode
        self.message = message
        self.sender = sender


def shell_not_found(shell_id: str) -> WSManFault:
    return WSManFault(
        SHELL_NOT_FOUND, "w:InvalidSelectors",
        f"The request for the Windows Remote Shell with ShellId {shell_id} failed because the shell "
        "was not found on the server. Possible causes are: the specified ShellId is incorrect or "
        "the shell no longer exists on the server. Provide the correct ShellId or create a new "
        "shell and retry the operation.")


def timed_out() -> WSManFault:
    return WSManFault(TIMED_OUT, "w:TimedOut",
                      "The WS-Management service cannot complete the operation within the time "
                      "specified in OperationTimeout.", sender=False)


@dataclass
class Request:
    """One parsed WSMan request."""

    action: str                      # Create, Command, Send, Receive, Signal, Delete, Get
    message_id: str
    resource_uri: str
    selectors: dict[str, str]
    options: dict[str, str]
    operation_timeout: float
    body: ET.Element | None
    raw_action: str = ""
    max_envelope: int = 153600

    @property
    def shell_id(self) -> str:
        return self.selectors.get("ShellId", "").upper()


def _text(element: ET.Element | None) -> str:
    return (element.text or "").strip() if element is not None else ""


def parse(soap: bytes) -> Request:
    """Parse a request envelope. Raises ``WSManFault`` for a malformed or unknown one."""
    if b"<!DOCTYPE" in soap[:4096].upper() or b"<!ENTITY" in soap.upper():
        # SOAP has no DTDs; refusing them keeps entity expansion out of the parser.
        raise WSManFault(INVALID_MESSAGE, "w:InvalidMessageInformationHeader",
                         "A SOAP message must not contain a DTD.")
    try:
        root = ET.fromstring(soap)  # noqa: S314  (no DTD: checked above)
    except ET.ParseError as exc:
        raise WSManFault(INVALID_MESSAGE, "w:InvalidMessageInformationHeader",
                         f"The request is not well-formed XML: {exc}") from exc
    header = root.find("s:Header", NS)
    if header is None:
        raise WSManFault(INVALID_MESSAGE, "w:InvalidMessageInformationHeader",
                         "The SOAP envelope has no header.")
    raw_action = _text(header.find("wsa:Action", NS))
    action = ACTIONS.get(raw_action)
    message_id = _text(header.find("wsa:MessageID", NS))
    if action is None:
        raise WSManFault(ACTION_NOT_SUPPORTED, "wsa:ActionNotSupported",
                         f"The action {raw_action!r} is not supported by the service.")
    selectors = {sel.get("Name", ""): _text(sel)
                 for sel in header.findall("wsman:SelectorSet/wsman:Selector", NS)}
    options = {opt.get("Name", ""): _text(opt)
               for opt in header.findall("wsman:OptionSet/wsman:Option", NS)}
    timeout_m = _DURATION.match(_text(header.find("wsman:OperationTimeout", NS)))
    envelope_text = _text(header.find("wsman:MaxEnvelopeSize", NS))
    body = root.find("s:Body", NS)
    first = body[0] if body is not None and len(body) else None
    return Request(action=action, message_id=message_id,
                   resource_uri=_text(header.find("wsman:ResourceURI", NS)), selectors=selectors,
                   options=options, operation_timeout=float(timeout_m.group(1)) if timeout_m else 60.0,
                   body=first, raw_action=raw_action,
                   max_envelope=int(envelope_text) if envelope_text.isdigit() else 153600)


def _q(prefix: str, name: str) -> str:
    return f"{{{NS[prefix]}}}{name}"


def envelope(request_message_id: str, action: str, *body: ET.Element,
             selectors: dict[str, str] | None = None) -> bytes:
    env = ET.Element(_q("s", "Envelope"), {_q("xml", "lang"): "en-US"})
    header = ET.SubElement(env, _q("s", "Header"))
    ET.SubElement(header, _q("wsa", "Action")).text = action
    ET.SubElement(header, _q("wsa", "MessageID")).text = f"uuid:{str(uuid.uuid4()).upper()}"
    ET.SubElement(header, _q("wsa", "To")).text = ANONYMOUS
    ET.SubElement(header, _q("wsa", "RelatesTo")).text = request_message_id
    if selectors:
        sset = ET.SubElement(header, _q("wsman", "SelectorSet"))
        for name, value in selectors.items():
            ET.SubElement(sset, _q("wsman", "Selector"), Name=name).text = value
    body_el = ET.SubElement(env, _q("s", "Body"))
    body_el.extend(body)
    data: bytes = ET.tostring(env, encoding="utf-8", xml_declaration=False)
    return data


def fault_envelope(request_message_id: str, fault: WSManFault, machine: str) -> bytes:
    body = ET.Element(_q("s", "Fault"))
    code = ET.SubElement(body, _q("s", "Code"))
    ET.SubElement(code, _q("s", "Value")).text = "s:Sender" if fault.sender else "s:Receiver"
    sub = ET.SubElement(code, _q("s", "Subcode"))
    ET.SubElement(sub, _q("s", "Value")).text = fault.subcode
    reason = ET.SubElement(body, _q("s", "Reason"))
    ET.SubElement(reason, _q("s", "Text"), {_q("xml", "lang"): "en-US"}).text = fault.message
    detail = ET.SubElement(body, _q("s", "Detail"))
    wf = ET.SubElement(detail, _q("wsmanfault", "WSManFault"), Code=str(fault.code), Machine=machine)
    ET.SubElement(wf, _q("wsmanfault", "Message")).text = fault.message
    return envelope(request_message_id or "uuid:00000000-0000-0000-0000-000000000000",
                    FAULT_ACTION, body)


def shell_element(shell_id: str, resource_uri: str, owner: str, client_ip: str,
                  *, state: str | None = None) -> ET.Element:
    shell = ET.Element(_q("rsp", "Shell"))
    for name, value in (("ShellId", shell_id), ("ResourceUri", resource_uri), ("Owner", owner),
                        ("ClientIP", client_ip), ("IdleTimeOut", "PT7200.000S"),
                        ("InputStreams", "stdin pr"), ("OutputStreams", "stdout"),
                        ("ShellRunTime", "P0DT0H0M0S"), ("ShellInactivity", "P0DT0H0M0S")):
        ET.SubElement(shell, _q("rsp", name)).text = value
    if state is not None:
        ET.SubElement(shell, _q("rsp", "State")).text = state
    return shell


def create_response(request: Request, endpoint: str, shell: ET.Element, shell_id: str) -> bytes:
    body = ET.Element(_q("wst", "ResourceCreated"))
    ET.SubElement(body, _q("wsa", "Address")).text = endpoint
    params = ET.SubElement(body, _q("wsa", "ReferenceParameters"))
    ET.SubElement(params, _q("wsman", "ResourceURI")).text = request.resource_uri
    sset = ET.SubElement(params, _q("wsman", "SelectorSet"))
    ET.SubElement(sset, _q("wsman", "Selector"), Name="ShellId").text = shell_id
    return envelope(request.message_id, TRANSFER + "CreateResponse", body, shell)


def command_response(request: Request, command_id: str) -> bytes:
    body = ET.Element(_q("rsp", "CommandResponse"))
    ET.SubElement(body, _q("rsp", "CommandId")).text = command_id
    return envelope(request.message_id, SHELL + "CommandResponse", body)


def receive_response(request: Request, chunks: list[tuple[bytes, str | None]], *,
                     done_command: str | None = None, running_command: str | None = None) -> bytes:
    body = ET.Element(_q("rsp", "ReceiveResponse"))
    for data, command_id in chunks:
        attrs = {"Name": "stdout"}
        if command_id:
            attrs["CommandId"] = command_id
        ET.SubElement(body, _q("rsp", "Stream"), attrs).text = base64.b64encode(data).decode()
    if done_command or running_command:
        state = "Done" if done_command else "Running"
        ET.SubElement(body, _q("rsp", "CommandState"),
                      CommandId=done_command or running_command or "",
                      State=f"{SHELL}CommandState/{state}")
    return envelope(request.message_id, SHELL + "ReceiveResponse", body)


def simple_response(request: Request, name: str) -> bytes:
    if name in ("SendResponse", "SignalResponse"):
        return envelope(request.message_id, SHELL + name, ET.Element(_q("rsp", name)))
    return envelope(request.message_id, TRANSFER + name)


def get_response(request: Request, shell: ET.Element) -> bytes:
    return envelope(request.message_id, TRANSFER + "GetResponse", shell)


# ---- request bodies -------------------------------------------------------------------------


def creation_xml(request: Request) -> bytes:
    if request.body is None:
        raise WSManFault(INVALID_MESSAGE, "w:InvalidMessageInformationHeader", "Create has no Shell.")
    el = request.body.find("pwsh:creationXml", NS)
    if el is None:
        raise WSManFault(INVALID_MESSAGE, "w:InvalidMessageInformationHeader",
                         "The Shell has no creationXml.")
    return base64.b64decode(_text(el))


def command_line(request: Request) -> tuple[str, bytes]:
    body = request.body
    if body is None or body.tag != _q("rsp", "CommandLine"):
        raise WSManFault(INVALID_MESSAGE, "w:InvalidMessageInformationHeader", "No CommandLine.")
    command_id = (body.get("CommandId") or str(uuid.uuid4())).upper()
    args = body.find("rsp:Arguments", NS)
    return command_id, base64.b64decode(_text(args)) if args is not None else b""


def send_streams(request: Request) -> list[tuple[str, str | None, bytes]]:
    """(stream name, command id, data) of every Stream in a Send."""
    body = request.body
    if body is None:
        return []
    out = []
    for stream in body.findall("rsp:Stream", NS):
        command_id = stream.get("CommandId")
        out.append((stream.get("Name", "stdin"), command_id.upper() if command_id else None,
                    base64.b64decode(_text(stream))))
    return out


def receive_target(request: Request) -> str | None:
    body = request.body
    stream = body.find("rsp:DesiredStream", NS) if body is not None else None
    command_id = stream.get("CommandId") if stream is not None else None
    return command_id.upper() if command_id else None


def signal(request: Request) -> tuple[str, str]:
    body = request.body
    if body is None:
        raise WSManFault(INVALID_MESSAGE, "w:InvalidMessageInformationHeader", "No Signal.")
    return (body.get("CommandId") or "").upper(), _text(body.find("rsp:Code", NS))


def pipeline_not_found(command_id: str) -> WSManFault:
    return WSManFault(PIPELINE_NOT_FOUND, "w:InvalidSelectors",
                            f"The command with CommandId {command_id} was not found on the server.")


def message_id(soap: bytes) -> str:
    try:
        return parse(soap).message_id
    except WSManFault:
        return ""

