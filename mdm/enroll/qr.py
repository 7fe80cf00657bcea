"""QR codes of enrollment links: PNG for the API and e-mail, text for the terminal."""

from __future__ import annotations

import io

import segno


def png(url: str, scale: int = 6) -> bytes:
    buf = io.BytesIO()
    segno.make(url, error="m").save(buf, kind="png", scale=scale, border=4)
    return buf.getvalue()


def terminal(url: str) -> str:
    """The QR code drawn with Unicode half blocks (two modules per character row), dark on light
    so that phone cameras read it from a dark terminal."""
    buf = io.StringIO()
    segno.make(url, error="m").terminal(out=buf, compact=True, border=2)
    return buf.getvalue()
