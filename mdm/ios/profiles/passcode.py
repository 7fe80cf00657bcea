"""Passcode policy (``com.apple.mobiledevice.passwordpolicy``)."""

from __future__ import annotations

from typing import ClassVar, Literal

from mdm.ios.profiles.base import PayloadBase, field


class PasscodePolicy(PayloadBase):
    payload_type: ClassVar[str] = "com.apple.mobiledevice.passwordpolicy"
    type: Literal["passcode"] = "passcode"

    force_pin: bool | None = field("forcePIN")
    allow_simple: bool | None = field("allowSimple")
    require_alphanumeric: bool | None = field("requireAlphanumeric")
    min_length: int | None = field("minLength", ge=0, le=16)
    min_complex_chars: int | None = field("minComplexChars", ge=0, le=4)
    max_failed_attempts: int | None = field("maxFailedAttempts", ge=2, le=11)
    # Minutes until the device locks; 0 = no limit.
    max_inactivity: int | None = field("maxInactivity", ge=0, le=15)
    max_pin_age_in_days: int | None = field("maxPINAgeInDays", ge=0, le=730)
    pin_history: int | None = field("pinHistory", ge=1, le=50)
    # Minutes the device may stay unlocked without asking the passcode again.
    max_grace_period: int | None = field("maxGracePeriod", ge=0)
