"""iOS/iPadOS MDM: check-in, command channel, device identity, inventory (DESIGN §4).

Modules: ``messages`` (protocol types), ``cms`` + ``identity`` (who sent a request; the binding
cache itself is ``mdm.core.identity``), ``checkin`` and ``channel`` (services), ``service``
(the service object and binding look-up), ``store`` (every SQL statement, beside ``tables``),
``event_types`` (the events it emits), ``inventory``, ``state`` and ``notify`` (hot-path caches),
``push_seam`` (re-push requests for the APNs pusher), ``commands`` + ``command_*`` +
``profile_signer`` (the command translator), ``renewal`` (identity renewal), ``handlers`` +
``plugin`` (wiring).
"""
