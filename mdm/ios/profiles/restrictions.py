"""Restrictions (``com.apple.applicationaccess``).

The common restrictions are typed fields; the other keys Apple defines (there are some two
hundred) go in ``other`` under their Apple names and are checked against Apple's schema when the
profile is built, so a misspelt key is an error, not a silently ignored setting.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from mdm.ios.profiles.base import PayloadBase, field


class Restrictions(PayloadBase):
    payload_type: ClassVar[str] = "com.apple.applicationaccess"
    type: Literal["restrictions"] = "restrictions"

    # Device functions
    allow_camera: bool | None = field("allowCamera")
    allow_screen_shot: bool | None = field("allowScreenShot")
    allow_voice_dialing: bool | None = field("allowVoiceDialing")
    allow_assistant: bool | None = field("allowAssistant")
    allow_assistant_while_locked: bool | None = field("allowAssistantWhileLocked")
    allow_passbook_while_locked: bool | None = field("allowPassbookWhileLocked")
    allow_fingerprint_for_unlock: bool | None = field("allowFingerprintForUnlock")
    allow_untrusted_tls_prompt: bool | None = field("allowUntrustedTLSPrompt")
    allow_diagnostic_submission: bool | None = field("allowDiagnosticSubmission")
    allow_global_background_fetch_when_roaming: bool | None = field("allowGlobalBackgroundFetchWhenRoaming")
    force_limit_ad_tracking: bool | None = field("forceLimitAdTracking")
    # Apps and stores
    allow_app_installation: bool | None = field("allowAppInstallation")
    allow_app_removal: bool | None = field("allowAppRemoval")
    allow_in_app_purchases: bool | None = field("allowInAppPurchases")
    allow_safari: bool | None = field("allowSafari")
    allow_explicit_content: bool | None = field("allowExplicitContent")
    allow_game_center: bool | None = field("allowGameCenter")
    allow_multiplayer_gaming: bool | None = field("allowMultiplayerGaming")
    allow_enterprise_app_trust: bool | None = field("allowEnterpriseAppTrust")
    force_itunes_store_password_entry: bool | None = field("forceITunesStorePasswordEntry")
    # iCloud and data flow
    allow_cloud_backup: bool | None = field("allowCloudBackup")
    allow_cloud_document_sync: bool | None = field("allowCloudDocumentSync")
    allow_cloud_keychain_sync: bool | None = field("allowCloudKeychainSync")
    allow_cloud_photo_library: bool | None = field("allowCloudPhotoLibrary")
    allow_managed_apps_cloud_sync: bool | None = field("allowManagedAppsCloudSync")
    allow_open_from_managed_to_unmanaged: bool | None = field("allowOpenFromManagedToUnmanaged")
    allow_open_from_unmanaged_to_managed: bool | None = field("allowOpenFromUnmanagedToManaged")
    force_encrypted_backup: bool | None = field("forceEncryptedBackup")
    force_air_drop_unmanaged: bool | None = field("forceAirDropUnmanaged")
    # Supervised devices only
    allow_air_drop: bool | None = field("allowAirDrop")
    allow_bluetooth_modification: bool | None = field("allowBluetoothModification")
    allow_erase_content_and_settings: bool | None = field("allowEraseContentAndSettings")
    allow_passcode_modification: bool | None = field("allowPasscodeModification")
    allow_account_modification: bool | None = field("allowAccountModification")
    allow_ui_profile_installation: bool | None = field("allowUIConfigurationProfileInstallation")
    allow_usb_restricted_mode: bool | None = field("allowUSBRestrictedMode")
    allow_vpn_creation: bool | None = field("allowVPNCreation")
    allow_host_pairing: bool | None = field("allowHostPairing")
    force_wifi_to_allowed_networks_only: bool | None = field("forceWiFiToAllowedNetworksOnly")
    # Any other key of com.apple.applicationaccess, by its Apple name.
    other: dict[str, Any] = Field(default_factory=dict, exclude=True)

    @model_validator(mode="after")
    def _no_duplicates(self) -> Restrictions:
        typed = set(PayloadBase.content(self))
        clash = sorted(typed & set(self.other))
        if clash:
            raise ValueError(f"{', '.join(clash)} given both as a typed field and in 'other'")
        return self

    def content(self) -> dict[str, Any]:
        out = super().content()
        out.update(self.other)
        return out
