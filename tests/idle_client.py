"""A legitimate enrolled device polling Idle, as a separate process of the latency test, so that
neither its signing nor its HTTP client shares the server's event loop:
``python tests/idle_client.py --url URL --ca root.pem --cert id.pem --key id.key --udid UDID``.

For each line ``N`` on standard input it sends N signed Idle polls one after the other over one
kept-alive TLS connection and prints one JSON line: the latency of each (ms, signing excluded).
"""

from __future__ import annotations

import argparse
import json
import plistlib
import sys
import time

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from ios_support import sign

CONTENT_TYPE = "application/x-apple-aspen-mdm"


def main() -> None:
    parser = argparse.ArgumentParser()
    for name in ("--url", "--ca", "--cert", "--key", "--udid"):
        parser.add_argument(name, required=True)
    args = parser.parse_args()
    with open(args.cert, "rb") as f:
        cert = x509.load_pem_x509_certificate(f.read())
    with open(args.key, "rb") as f:
        key = serialization.load_pem_private_key(f.read(), password=None)
    with httpx.Client(base_url=args.url, verify=args.ca, timeout=60) as client:
        print("ready", flush=True)
        for line in sys.stdin:
            latencies = []
            for _ in range(int(line)):
                body = plistlib.dumps({"UDID": args.udid, "Status": "Idle"})
                headers = {"Mdm-Signature": sign(body, cert, key), "Content-Type": CONTENT_TYPE}
                started = time.perf_counter()
                response = client.put("/mdm/server", content=body, headers=headers)
                latencies.append((time.perf_counter() - started) * 1000)
                if response.status_code != 200:
                    print(json.dumps({"error": response.status_code, "text": response.text}), flush=True)
                    return
            print(json.dumps({"latencies": latencies}), flush=True)


if __name__ == "__main__":
    main()
