"""What can go wrong talking to Exchange, as the runner reports it to the service.

``transient`` errors are retried by the runner (with backoff, and on another Client Access server
in cluster mode); the others are final for that cmdlet and reach the command log and the events
with their message. No error carries a secret (passwords, tickets) in its text.
"""

from __future__ import annotations


class ExchangeError(Exception):
    """Base class. ``reason`` is a short stable code for events and metrics."""

    reason = "exchange_error"
    transient = False

    def __init__(self, message: str, *, server: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.server = server

    def __str__(self) -> str:
        return f"{self.message} (server {self.server})" if self.server else self.message


class ExchangeUnavailable(ExchangeError):
    """Could not reach the server or it failed mid-request (refused, reset, 5xx, restarted)."""

    reason = "unavailable"
    transient = True


class ExchangeTimeout(ExchangeError):
    """The cmdlet did not finish within its timeout (its pipeline is stopped)."""

    reason = "timeout"
    transient = True


class ExchangeAuthError(ExchangeError):
    """Kerberos failed: wrong password or keytab, KDC unreachable, or the server refused us (401)."""

    reason = "auth_failed"


class ExchangeProtocolError(ExchangeError):
    """The server answered something that is not WSMan/PSRP (garbage, HTML, a truncated body)."""

    reason = "bad_response"
    transient = True


class CmdletNotPermitted(ExchangeError):
    """The account may not run this cmdlet (it is not in its RBAC role, or the session does not
    know it: CommandNotFoundException)."""

    reason = "not_permitted"

    def __init__(self, message: str, *, cmdlet: str, server: str | None = None) -> None:
        super().__init__(message, server=server)
        self.cmdlet = cmdlet


class CmdletFailed(ExchangeError):
    """The cmdlet ran and wrote a PowerShell error record (``error_id`` is its
    FullyQualifiedErrorId, ``category`` its CategoryInfo.Category, e.g. "ObjectNotFound")."""

    reason = "cmdlet_error"

    def __init__(self, message: str, *, cmdlet: str, error_id: str = "", category: str = "",
                 target: str | None = None, server: str | None = None) -> None:
        super().__init__(message, server=server)
        self.cmdlet = cmdlet
        self.error_id = error_id
        self.category = category
        self.target = target


class ObjectNotFound(CmdletFailed):
    """The mailbox, device or policy named does not exist (any more)."""

    reason = "not_found"


class NotConfigured(ExchangeError):
    """No Exchange server is configured ([eas] servers is empty)."""

    reason = "not_configured"
