"""SCEP server (RFC 8894) on the iOS listener, its one-time challenges, and a SCEP client."""
