"""The commented ``mdm.toml`` that ``mdm init`` writes (``str.format`` fields: hostname,
database_url and the five listener ports)."""

CONFIG_TEMPLATE = """\
# mdm configuration. Every key can be left out; the value shown is the default.
# Environment variables override keys: MDM_DATABASE_URL, MDM_HOSTNAME, MDM_IOS_PORT,
# MDM_KES_PORT, MDM_WEB_HTTP_PORT, MDM_WEB_HTTPS_PORT, MDM_ADMIN_PORT, MDM_LOG_JSON,
# MDM_LOG_LEVEL, MDM_CA_PASSPHRASE.
# `mdm reload` applies an edited file to a running server and names the keys that need a restart.

# Public host name: used in URLs handed to devices and in server-certificate SANs.
hostname = "{hostname}"

[database]
# Empty: embedded SQLite in the data directory. For PostgreSQL:
# url = "postgresql+asyncpg://mdm:secret@db.example.com:5432/mdm"
url = "{database_url}"
pool_size = 10

[listeners.ios]        # iOS MDM check-in, command channel, SCEP (server certificate slot "ios")
enabled = true
bind = "0.0.0.0"
port = {ios_port}
mode = "tls"           # "plain" when a trusted reverse proxy terminates TLS
trusted_proxies = []   # e.g. ["10.0.0.5/32"]: only these may send Client-Cert headers
kcd = false            # accept Authorization: Negotiate (Kerberos delegation) from trusted_proxies

[listeners.kes]        # Android agent protocol (slot "M"), mutual TLS once a device holds a certificate
enabled = true
bind = "0.0.0.0"
port = {kes_port}
mode = "tls"
trusted_proxies = []
kcd = false

[listeners.web]        # one-time links: enrollment profiles, packages, CRL, CA certificates (slot "web")
enabled = true
bind = "0.0.0.0"
http_port = {web_http_port}
https_port = {web_https_port}
trusted_proxies = []   # TLS-terminating proxies in front of http_port (profiles are served over HTTPS only)
kcd = false            # one-time links need the Negotiate principal of the link's user

[listeners.admin]      # REST API, console, metrics (slot "C", reserve "CR")
enabled = true
bind = "0.0.0.0"
port = {admin_port}
mode = "tls"
trusted_proxies = []

[logging]
json = false           # JSON lines instead of text
level = "INFO"
access_log = true

[pki]
key_type = "rsa"       # "rsa" or "ec" (P-256)
rsa_bits = 2048
# Encrypts CA keys at rest. Prefer passphrase_file or MDM_CA_PASSPHRASE to a literal here.
passphrase_file = ""
server_validity_days = 825
extra_sans = []        # additional DNS names / IPs for server certificates
crl_url = ""           # CRL distribution point; default http://<hostname>:<web http_port>/crl/issuing.crl
crl_validity_hours = 72
revocation_refresh_seconds = 10.0   # pick up revocations made by other replicas
renewal_check_seconds = 3600.0      # look for device certificates inside their renewal window
kes_tls_crl_check = false           # also refuse revoked certificates in the KES TLS handshake
request_poll_seconds = 60.0         # ask an enterprise CA again about a pending request
request_max_days = 14.0             # give up a request still pending after this (status failed)

[limits]
max_body_bytes = 1048576
shutdown_grace_seconds = 10.0

[apns]                 # the MDM push certificate (PEM); its subject UID is the profile Topic
# Required before iOS enrollment profiles can be made. `mdm init` puts a self-signed DEVELOPMENT
# identity here: devices enroll but cannot be woken by push. Apple's certificate replaces it
# (`mdm push apns csr`, then `mdm push apns set-cert FILE`, which sets both files; see the README).
# A renewed certificate with the same topic is taken by `mdm reload` without a restart.
certificate_file = ""
key_file = ""          # empty: the key is in certificate_file, or in the .key file next to it
environment = "production"     # or "development" (Apple's sandbox gateway)
base_url = ""          # overrides the gateway (tests, the contract fake)
expiration_seconds = 604800    # apns-expiration: Apple keeps a push this long for an offline device
connections = 2        # long-lived HTTP/2 connections (1..32), each with as many streams as Apple allows
timeout_seconds = 10.0
ca_file = ""           # CA bundle to verify the gateway with (empty: the system's)

[fcm]                  # Firebase Cloud Messaging (HTTP v1) for Android wake-ups (empty file: off)
service_account_file = ""      # the service-account JSON (its private key: keep it mode 0600)
base_url = ""          # overrides https://fcm.googleapis.com (tests, the contract fake)
token_url = ""         # overrides the service account's token_uri
ttl_seconds = 604800   # how long FCM keeps a wake-up for an offline device (at most 28 days)
collapse_key = "mdm-wake"
project_per_minute = 600000    # Google's quota for the project ...
device_per_minute = 240        # ... and per device
timeout_seconds = 10.0
ca_file = ""

[push]                 # the wake-up dispatcher, and the outbound proxy of APNs and FCM
proxy_host = ""        # HTTP CONNECT proxy (empty: direct)
proxy_port = 3128
proxy_login = ""       # optional Basic login; prefer proxy_password_file to a literal password
proxy_password = ""
proxy_password_file = ""
retry_seconds = 300.0          # re-push a silent device with queued commands after 5 min, doubling ...
retry_max_seconds = 21600.0    # ... up to 6 h (with jitter)
repush_per_second = 500.0      # re-pushes per second at most (first wake-ups are never held back; 0: unpaced)
worker = "inline"      # "inline": pushes sent from the server's loop; "process": a push process of its own
workers = 1            # with worker = "process", PostgreSQL only: worker processes sharing the owed rows
# worker_nice = 10     # worker = "process": their nice value, 0-19 (default: 10 on PostgreSQL, 0 on SQLite)
silent_after_hours = 24.0      # the daily sweep wakes devices silent for longer
sweep_interval_seconds = 86400.0
batch_size = 1000      # owed wake-ups taken per batch
concurrency = 1000     # pushes in flight at once
expiry_warning_days = [30, 7, 1]   # warn (log and event) this many days before the certificate expires

[enroll]               # iOS enrollment profiles and one-time links
identity = "pkcs12"    # "pkcs12": identity inside the profile; "scep": SCEP payload, one-time challenge
link_ttl_seconds = 604800
pkcs12_encryption = "legacy"   # "legacy" (3DES, every iOS version) or "aes"
identity_validity_days = 365
access_rights = 8191
# server_url / checkin_url / scep_url / link_base_url: set when a reverse proxy publishes other names

[smtp]                 # e-mail delivery of enrollment links (empty host: off)
host = ""
port = 587
security = "starttls"  # "starttls", "ssl" or "none"
username = ""
password_file = ""     # the password lives in this file, not here
from = ""

[ios]                  # iOS MDM protocol
user_authenticate_enabled = false
max_body_bytes = 1048576
notnow_backoff_seconds = 60.0  # NotNow: re-push after 60 s, 120 s, ... (at least 1)
signature_max_age = 600.0      # an older Mdm-Signature signingTime is a replay
# Refused requests: per source and reason, the first 5 per minute are security events, the rest one aggregate.
security_events_verbatim_per_interval = 5
security_events_interval_seconds = 60.0

[ios_commands]
sign_profiles = false  # sign InstallConfProf profiles with the `ios` certificate

[scep]                 # SCEP server at /scep on the iOS listener (RFC 8894)
enabled = true
static_challenge_file = ""     # optional shared challenge besides the one-time ones
manual_approval = false        # answer PENDING until an administrator approves

[reporting]            # events to the core server (docs/reporting.md); "none": kept in the outbox
transport = "none"     # "none", "generic" (HTTPS JSON, mutual TLS, HMAC) or "ksc" (the Open API)
url = ""               # generic: the URL batches are POSTed to; ksc: https://ksc.example.com:13299
ca_file = ""           # verifies the core server's certificate (empty: the system's trust store)
client_certificate_file = ""   # generic: empty issues a core-link certificate from the internal CA
client_key_file = ""
hmac_key_file = ""     # generic: the HMAC-SHA256 key, in a file of its own (0600)
ksc_user = ""
ksc_password_file = "" # ksc: the password, in a file of its own (0600)
ksc_domain = ""
ksc_internal = false
batch_size = 500
backoff_initial_seconds = 1.0  # after a failure: 1 s, 2 s, 4 s ... (jittered) up to the maximum
backoff_max_seconds = 300.0
dead_letter_after_attempts = 5         # refusals by the core server before an event is set aside
dead_letter_after_seconds = 1209600.0  # an event undelivered for 14 days is set aside too
retention_seconds = 604800.0           # delivered events are deleted after 7 days

[eas]                  # ActiveSync devices through Exchange Management Shell (docs/eas.md)
enabled = false
mode = "standard"      # "standard": one server; "cluster": several Client Access servers, failing over
servers = []           # FQDNs of the Exchange (Client Access) servers, e.g. ["cas1.corp.example.com"]
transport = "https"    # WSMan over "https" (or "http", messages then encrypted by Kerberos)
port = 0               # 0: 443 for https, 80 for http
path = "/PowerShell"
configuration_name = "Microsoft.Exchange"
ca_file = ""           # verifies the Exchange servers' certificates (empty: the system's trust store)
principal = ""         # the service account, user@REALM
keytab_file = ""       # its keytab, or:
password_file = ""     # a file holding its password (0600)
scope = "domain"       # "domain" or "forest" (Set-AdServerSettings -ViewEntireForest)
discovery_interval_seconds = 3600.0
discovery_batch = 100  # mailboxes whose devices are read in one pipeline
concurrency = 4        # pipelines at once per server
connect_timeout_seconds = 15.0
cmdlet_timeout_seconds = 120.0
retries = 3            # transient failures (unreachable, timeout, garbage) retried with backoff
backoff_initial_seconds = 1.0
backoff_max_seconds = 60.0
failover_seconds = 60.0        # cluster: a failed server is passed over this long
command_poll_seconds = 5.0     # queued EAS commands are looked for this often (enqueue wakes sooner)

[api]                  # admin REST API
metrics_allow = []     # addresses that may read /metrics without a token (else the metrics:read scope)

[kerberos]             # the service's Kerberos identity for listeners with kcd = true
keytab = ""            # e.g. "http.keytab" (under the data directory), mode 0600
service_principal = "" # default HTTP/<hostname>
realms = []            # e.g. ["CORP.EXAMPLE.COM"]: alice@CORP.EXAMPLE.COM is user alice
user_map = {{}}          # exceptions: {{ "svc-alice@CORP.EXAMPLE.COM" = "alice" }}

[client]               # how the `mdm` CLI reaches a running server
url = ""               # default https://127.0.0.1:<admin port>
token_file = ""        # default ~/.config/mdm/token (mode 0600); or MDM_API_TOKEN

# [adcs]               # AD CS web enrollment: the "adcs" certificate source (docs/PKI.md)
# url = "https://ca.corp.example.com/certsrv"
# auth = "negotiate"   # "negotiate" (Kerberos), "ntlm" or "basic" (ntlm/basic: https only)
# principal = "mdm-svc@CORP.EXAMPLE.COM"   # negotiate: the service account, and its
# keytab = "/etc/mdm/mdm-svc.keytab"       # keytab (or password_file)
# username = ""        # ntlm/basic: CORP\\mdm-svc, with password_file
# password_file = ""   # a file holding the password (0600)
# ca_bundle = ""       # verifies the CA web server's TLS certificate (empty: the system's store)
# ca_chain_file = "/etc/mdm/corp-ca-chain.pem"   # the domain CA chain (required)
# default_template = "MdmUser"   # for rules that name no template
# requester_domain = "CORP"      # NetBIOS domain: requestername=CORP\\user
# enroll_on_behalf = true        # sign requests with the Enrollment Agent (mdm adcs agent import)
# timeout_seconds = 30.0
# agent_passphrase_file = ""     # the agent key's passphrase (empty: the CA passphrase)
"""
