"""The service account's Kerberos credentials for the Exchange runner: the shared login
(``mdm.core.kerberos_login``: keytab or 0600 password file, a private ccache ``DATA_DIR/eas/krb5cc``,
renewal) raising ``ExchangeAuthError`` and naming ``[eas]`` in its messages."""

from __future__ import annotations

from pathlib import Path

from mdm.core.kerberos_login import DEFAULT_RENEW_MARGIN, TicketInfo
from mdm.core.kerberos_login import KerberosLogin as _KerberosLogin
from mdm.eas.config import EasConfig
from mdm.eas.errors import ExchangeAuthError

__all__ = ["DEFAULT_RENEW_MARGIN", "KerberosLogin", "TicketInfo"]


class KerberosLogin(_KerberosLogin):
    error = ExchangeAuthError

    def __init__(self, *, principal: str, cache_dir: Path, keytab: Path | None = None,
                 password_file: Path | None = None,
                 renew_margin: float = DEFAULT_RENEW_MARGIN) -> None:
        super().__init__(principal=principal, cache_dir=cache_dir, keytab=keytab,
                         password_file=password_file, label="eas", renew_margin=renew_margin)

    @classmethod
    def from_config(cls, config: EasConfig, data_dir: Path) -> KerberosLogin:
        return cls(
            principal=config.principal, cache_dir=data_dir / "eas",
            keytab=Path(config.keytab_file) if config.keytab_file else None,
            password_file=Path(config.password_file) if config.password_file else None,
        )
