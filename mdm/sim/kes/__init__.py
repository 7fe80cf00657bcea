"""The KES (Android) agent simulator: everything the agent does over the protocol of
``docs/kes-protocol.md``, from the enrollment package to the sync loop (``agent.KesAgent``)."""
