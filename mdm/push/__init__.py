"""Push notifications: the ``[apns]`` section and the MDM push topic (the push service itself
comes with the APNs pusher)."""
