"""Test tooling for SCEP: fixtures' helpers, a message forger for bad-input tests, external-client runners."""
