"""PKI: the internal CA, key storage, server-certificate slots, issuance."""
