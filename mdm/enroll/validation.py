"""Enrollment requests as given by an administrator: platform, user name, e-mail address; and
the profile identifier prefix derived from the configuration."""

from __future__ import annotations

import ipaddress
import re

from mdm.config import Config
from mdm.core.errors import InvalidArgument
from mdm.enroll.config import enroll_config

PLATFORMS = ("ios", "android")
_USER_RE = re.compile(r"^[^\s/\\\x00-\x1f\x7f]{1,255}$")
_EMAIL_RE = re.compile(r"^[^@\s<>\"',;]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)*$")


def validate_request(platform: str, user: str, email: str | None) -> tuple[str, str, str | None]:
    if platform not in PLATFORMS:
        raise InvalidArgument(f"unknown platform {platform!r} (allowed: ios, android)", field="platform")
    user = user.strip()
    if not user:
        raise InvalidArgument("user must not be empty", field="user")
    if not _USER_RE.match(user):
        raise InvalidArgument(
            "user must be 1-255 characters without spaces, control characters, '/' or '\\'", field="user"
        )
    if email is not None:
        email = email.strip()
        if not _EMAIL_RE.match(email) or len(email) > 320:
            raise InvalidArgument(f"not an e-mail address: {email!r}", field="email")
    return platform, user, email


def identifier_prefix(config: Config) -> str:
    configured = enroll_config(config).profile_identifier_prefix.strip(".")
    if configured:
        return configured
    host = config.hostname.strip(".").lower()
    try:
        ipaddress.ip_address(host)
        return "mdm"
    except ValueError:
        pass
    return ".".join(reversed(host.split("."))) if "." in host else host or "mdm"
