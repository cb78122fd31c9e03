#!/usr/bin/env python3
"""Independent Ed25519 verification of what the settlement engine's audit API shows.

Not the engine's code: the `cryptography` package (OpenSSL) checks each signature, so an
auditor need not trust the engine's own verifier. Reads JSON Lines on standard input, one check
per line:

    {"publicKey": "<hex 32 bytes>", "message": "<text signed, exactly>", "signature": "<hex 64 bytes>"}

e.g. an instruction's `signed.payload` and `signed.signature` from
`GET /api/audit/v1/settlements/{id}/events` with the enterprise's registered public key, or a
checkpoint's `note`, `signature` and `publicKey` from `GET /api/audit/v1/chain`.

Prints one line per check ("ok" or "FAIL") and exits 0 only when every check verifies
(1 when any fails, 2 on malformed input).
"""
import json
import sys

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey


def verify(check):
    key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(check["publicKey"]))
    try:
        key.verify(bytes.fromhex(check["signature"]), check["message"].encode("utf-8"))
        return True
    except InvalidSignature:
        return False


def main():
    failed = 0
    checked = 0
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            check = json.loads(line)
            ok = verify(check)
        except (ValueError, KeyError) as e:
            print(f"malformed input: {e}", file=sys.stderr)
            return 2
        checked += 1
        failed += 0 if ok else 1
        print("ok" if ok else "FAIL")
    print(f"{checked - failed} passed, {failed} failed", file=sys.stderr)
    return 1 if failed or not checked else 0


if __name__ == "__main__":
    sys.exit(main())
