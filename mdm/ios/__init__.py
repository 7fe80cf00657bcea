"""iOS/iPadOS MDM: check-in, command channel, device identity, inventory (DESIGN §4).

Modules: ``messages`` (protocol types), ``cms`` + ``identity`` (who sent a request), ``checkin`` and
``channel`` (services), ``inventory``, ``state`` and ``notify`` (hot-path caches), ``push_seam`` (re-push
requests for the APNs worker), ``handlers`` + ``plugin`` (wiring).
"""
