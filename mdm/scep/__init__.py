"""SCEP server (RFC 8894) on the iOS listener, its one-time challenges, and a SCEP client.

Endpoint ``/scep`` (alias ``/scep/pkiclient.exe``): ``GetCACaps``, ``GetCACert`` (RA signing and
encryption certificates, issuing CA, root, as a certs-only PKCS#7), ``PKIOperation`` by POST
(``application/x-pki-message``) or GET (``message`` = base64). Messages: PKCSReq (challenge
password required), RenewalReq (signed by a valid certificate we issued), CertPoll
(GetCertInitial), GetCert. Envelopes AES-128/256-CBC or 3DES-CBC; digests SHA-1/224/256/384/512.

Modules: ``protocol`` (names, errors), ``envelope`` (EnvelopedData), ``messages`` (SignedData
pkiMessage), ``ra`` (RA certificates), ``challenges`` (one-time challenges), ``service`` (the
protocol), ``approval_service`` (the approval queue), ``csr`` (the request inside), ``issuing``
(issuing an accepted request), ``store`` (every SQL statement), ``event_types``, ``keys`` (typed
service keys), ``handlers`` (HTTP), ``api`` and ``schemas`` (admin API), ``settings``
(``[scep]``), ``plugin`` (wiring), ``client``.

Configuration ``[scep]``: ``enabled``, ``static_challenge`` / ``static_challenge_file``,
``cert_type`` (mobile|mail|vpn), ``validity_days`` (0: issuance default), ``manual_approval``,
``max_clock_skew_seconds``, ``max_message_bytes``, ``min_rsa_bits``.
"""
