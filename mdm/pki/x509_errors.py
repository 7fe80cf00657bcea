"""What parsing an untrusted certificate can raise.

``cryptography`` reports most malformed DER as ``ValueError`` but an unknown version number as
``x509.InvalidVersion``, which is not a ``ValueError`` (found by fuzzing the iOS endpoint).
"""

from __future__ import annotations

from cryptography import x509

CERTIFICATE_ERRORS: tuple[type[Exception], ...] = (ValueError, x509.InvalidVersion)
