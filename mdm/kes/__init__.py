"""KES (Android) devices: the agent protocol on the ``kes`` listener (13292), DESIGN §5.

Versioned JSON over HTTPS (``docs/kes-protocol.md``): register and request a certificate over
one-way TLS with the one-time enrollment token, then sync over mutual TLS, the device associated
with its certificate's user. Two plugins: ``plugin`` (identity, register, certificate, renewal,
unenroll) and ``plugin_sync`` (sync: commands, results, inventory, policy, long poll, wake-ups).
"""
