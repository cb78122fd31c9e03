#!/usr/bin/env python3
# Partner example (Python): sign and stage a v2 settlement through the API, and verify the engine's signed webhooks.
"""A partner's first program against the settlement engine.

What it does, in order:

1. builds a v2 settlement body (one instruction: a connection gains or loses an amount of one
   currency) and asks the route's signing twin, ``POST …/partners/settlements-signing``, for the
   canonical payload — and checks that its own canonicalization gives the same string;
2. signs the exact UTF-8 bytes of that payload with the partner's Ed25519 key;
3. sends the signed request to ``POST /api/network/v2/enterprises/{e}/partners/settlements``,
   prints the reply, and sends it once more unchanged (a retry is idempotent: same settlement);
4. with ``--listen``, runs a small webhook receiver, waits for the engine's
   ``settlement.finalized`` and ``settlement.completed`` notifications of this settlement,
   verifies each signature with the engine's webhook public key (``verify_webhook`` below), and
   shows that a tampered body or a stale timestamp fails verification.

``vectors`` checks the canonicalization and signing here against the published test vectors
(docs/signing-test-vectors.json), offline; ``verify`` checks one recorded webhook delivery.

The last line printed is a JSON summary; the exit status is 0 only if every step succeeded.

The key: ``--key`` takes the 32-byte Ed25519 private key (the seed) as 64 hex characters — the
"seed" that ``command-api keygen`` prints; ``--key-file`` takes a PKCS#8 PEM file instead
(``openssl genpkey -algorithm ed25519 -out partner.pem``). ``public-key`` prints the 32-byte
public key as hex, the form the operator registers for the enterprise
(``POST /api/admin/v1/enterprises/{e}/keys {"publicKey": …}``).

Only the standard library and ``cryptography`` are used. Every option has an environment
variable too (``SETTLE_API``, ``SETTLE_TOKEN``, …; see ``--help``).
"""
import argparse
import base64
import binascii
import datetime
import http.server
import json
import os
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

# How old (or how far in the future) a webhook timestamp may be before it is refused.
WEBHOOK_TOLERANCE_SECONDS = 5 * 60


# --- keys -------------------------------------------------------------------------------------

def load_private_key(key_hex=None, key_file=None):
    """The partner's signing key: 64 hex characters (the 32-byte seed) or a PKCS#8 PEM file."""
    if key_file:
        with open(key_file, "rb") as f:
            key = serialization.load_pem_private_key(f.read(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise SystemExit(f"{key_file} does not hold an Ed25519 private key")
        return key
    if key_hex:
        seed = bytes.fromhex(key_hex.strip())
        if len(seed) != 32:
            raise SystemExit("--key must be 64 hex characters (the 32-byte Ed25519 seed)")
        return Ed25519PrivateKey.from_private_bytes(seed)
    raise SystemExit("give --key (hex seed) or --key-file (PEM)")


def public_key_hex(private_key):
    """The raw 32-byte public key as hex: what the operator registers for the enterprise."""
    raw = private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return raw.hex()


# --- request signing (SPEC §4) ----------------------------------------------------------------

def canonical(fields):
    """The canonical payload (docs/signing-test-vectors.md): compact JSON, keys sorted, raw UTF-8."""
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def sign(private_key, payload):
    """Hex of the Ed25519 signature of the exact UTF-8 bytes of `payload`."""
    return private_key.sign(payload.encode("utf-8")).hex()


class Api:
    """A tiny JSON client over urllib; every call returns (status, headers, body)."""

    def __init__(self, base, token):
        self.base = base.rstrip("/")
        self.token = token

    def call(self, method, path, body=None, headers=None):
        data = None if body is None else json.dumps(body).encode("utf-8")
        request = urllib.request.Request(self.base + path, data=data, method=method)
        request.add_header("Authorization", f"Bearer {self.token}")
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, response.headers, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                return e.code, e.headers, json.loads(raw)
            except ValueError:
                return e.code, e.headers, {"error": raw.decode("utf-8", "replace")}


def signed_request(api, path, signing_path, fields, private_key):
    """Ask the signing twin for the payload, sign it, send fields + payload + signature."""
    status, _, reply = api.call("POST", signing_path, fields)
    if status != 200:
        raise SystemExit(f"signing twin {signing_path} answered {status}: {reply}")
    payload = reply["payload"]
    # The twin's string is the one to sign. A partner that builds payloads itself can check its
    # canonicalization against it (settlements have no path ids, so the payload is the fields).
    matches = payload == canonical(fields)
    body = dict(fields, payload=payload, signature=sign(private_key, payload))
    status, headers, reply = api.call("POST", path, body)
    return status, headers, reply, body, matches


# --- webhook verification (Standard Webhooks, scheme v1a; docs/decisions/0005) ---------------

def verify_webhook(public_key_hex_, webhook_id, webhook_timestamp, body, signature_header,
                   now=None, tolerance=WEBHOOK_TOLERANCE_SECONDS):
    """Whether a delivery is the engine's: some `v1a,<base64>` entry of `webhook-signature` is an
    Ed25519 signature of b"{webhook-id}.{webhook-timestamp}." + body under the engine's public
    key, and the timestamp is within `tolerance` seconds of now. `body` is the exact bytes
    received — verify before parsing it."""
    if not (webhook_id and webhook_timestamp and signature_header):
        return False
    if not webhook_timestamp.isdigit():
        return False
    now = time.time() if now is None else now
    if abs(now - int(webhook_timestamp)) > tolerance:
        return False
    key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(public_key_hex_))
    signed_content = f"{webhook_id}.{webhook_timestamp}.".encode("utf-8") + body
    # Several space-separated entries may be present while the engine rotates its key.
    for entry in signature_header.split(" "):
        scheme, _, encoded = entry.partition(",")
        if scheme != "v1a":
            continue
        try:
            signature = base64.b64decode(encoded, validate=True)
            key.verify(signature, signed_content)
            return True
        except (binascii.Error, ValueError, InvalidSignature):
            continue
    return False


class Receiver:
    """A local webhook receiver: verifies every delivery, answers 204 (accepted) or 401, and keeps
    the verified notifications (deduplicated on webhook-id: delivery is at least once)."""

    def __init__(self, listen, public_key):
        host, _, port = listen.rpartition(":")
        self.public_key = public_key
        self.deliveries = {}  # webhook-id -> {"headers", "body", "notification"}
        self.refused = 0
        self.changed = threading.Condition()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                headers = {name: self.headers.get(name, "")
                           for name in ("webhook-id", "webhook-timestamp", "webhook-signature")}
                if not verify_webhook(receiver.public_key, headers["webhook-id"],
                                      headers["webhook-timestamp"], body, headers["webhook-signature"]):
                    with receiver.changed:
                        receiver.refused += 1
                    self.send_response(401)
                    self.end_headers()
                    return
                with receiver.changed:
                    receiver.deliveries.setdefault(headers["webhook-id"], {
                        "headers": headers, "body": body, "notification": json.loads(body)})
                    receiver.changed.notify_all()
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer((host or "127.0.0.1", int(port)), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, settlement_id, types, timeout):
        """The verified deliveries of `settlement_id` once every type in `types` has arrived (or
        what has arrived when `timeout` seconds have passed)."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                mine = [d for d in self.deliveries.values()
                        if d["notification"].get("settlementId") == settlement_id]
                if set(types) <= {d["notification"]["type"] for d in mine}:
                    return mine
                left = deadline - time.monotonic()
                if left <= 0:
                    return mine
                self.changed.wait(left)

    def close(self):
        self.server.shutdown()


# --- the program ------------------------------------------------------------------------------

def now_rfc3339():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def stage(args):
    key = load_private_key(args.key, args.key_file)
    api = Api(args.api, args.token)
    checks = {}
    receiver = Receiver(args.listen, args.webhook_public_key) if args.listen else None
    try:
        partners = f"/api/network/v1/enterprises/{args.enterprise}/partners"
        fields = {
            "externalId": args.external_id or f"example-py-{uuid.uuid4()}",
            "settlementAmounts": {args.connection: {args.currency: args.amount}},
            "cutoffAt": now_rfc3339(),
            "nonce": str(uuid.uuid4()),
        }
        # (1)–(3): the canonical payload from the twin, signed, sent.
        status, headers, reply, body, matches = signed_request(
            api, f"/api/network/v2/enterprises/{args.enterprise}/partners/settlements",
            f"{partners}/settlements-signing", fields, key)
        print(f"POST v2 settlements -> {status} (request {headers.get('X-Request-Id')}, "
              f"position {headers.get('X-Event-Position')})")
        print(json.dumps(reply, indent=2))
        checks["canonicalPayloadMatches"] = matches
        settlement = (reply or {}).get("settlement") or {}
        checks["staged"] = status == 200 and settlement.get("status") == "pending"
        settlement_id = settlement.get("id")

        # A retry of the very same signed body (same nonce, same payload) is idempotent: the
        # original settlement comes back and nothing changes. Retry like this on timeouts.
        retry_status, _, retry_reply = api.call(
            "POST", f"/api/network/v2/enterprises/{args.enterprise}/partners/settlements", body)
        checks["retryIdempotent"] = (retry_status == 200 and
                                     (retry_reply or {}).get("settlement", {}).get("id") == settlement_id)

        # Read it back; X-Min-Position makes the read wait for the projection to reach the write.
        position = headers.get("X-Event-Position")
        read_status, _, read = api.call("GET", f"{partners}/settlements/{settlement_id}",
                                        headers={"X-Min-Position": position} if position else None)
        checks["readBack"] = read_status == 200 and read["settlement"]["id"] == settlement_id

        # (4): the engine's notifications about this settlement, verified on arrival.
        webhooks = []
        if receiver:
            wanted = ["settlement.finalized", "settlement.completed"]
            delivered = receiver.wait_for(settlement_id, wanted, args.webhook_timeout)
            for d in delivered:
                n = d["notification"]
                print(f"webhook {n['type']} {d['headers']['webhook-id']}: signature verified")
                webhooks.append({"type": n["type"], "verified": True})
            checks["webhooksVerified"] = set(wanted) <= {w["type"] for w in webhooks}
            if delivered:
                d = delivered[0]
                h = d["headers"]
                if args.record:
                    # Keep one delivery as received: the exact body, and its headers beside it.
                    with open(args.record, "wb") as f:
                        f.write(d["body"])
                    with open(args.record + ".headers.json", "w", encoding="utf-8") as f:
                        json.dump(h, f)
                tampered = d["body"].replace(b'"settlementId"', b'"settlementID"', 1)
                checks["tamperedBodyRejected"] = not verify_webhook(
                    args.webhook_public_key, h["webhook-id"], h["webhook-timestamp"], tampered,
                    h["webhook-signature"])
                checks["staleTimestampRejected"] = not verify_webhook(
                    args.webhook_public_key, h["webhook-id"], h["webhook-timestamp"], d["body"],
                    h["webhook-signature"], now=int(h["webhook-timestamp"]) + WEBHOOK_TOLERANCE_SECONDS + 1)
            else:
                checks["tamperedBodyRejected"] = False
                checks["staleTimestampRejected"] = False
            checks["noDeliveryRefused"] = receiver.refused == 0

        # The settlement's state now: with a receiver, wait (briefly) until the read side shows
        # the execution the webhook announced; reads may lag a moment behind.
        deadline = time.monotonic() + (args.webhook_timeout if receiver else 0)
        while True:
            final_status, _, final = api.call("GET", f"{partners}/settlements/{settlement_id}")
            state = (final or {}).get("settlement", {}).get("status") if final_status == 200 else None
            if state in ("completed", "failed") or time.monotonic() >= deadline:
                break
            time.sleep(0.2)
        summary = {
            "example": "python",
            "settlementId": settlement_id,
            "stagedStatus": settlement.get("status"),
            "status": state,
            "webhooks": webhooks,
            "checks": checks,
            "ok": all(checks.values()),
        }
        print(json.dumps(summary))
        return 0 if summary["ok"] else 1
    finally:
        if receiver:
            receiver.close()


def verify_recorded(args):
    """Verify one recorded delivery: the body file and the three headers as given."""
    with open(args.body, "rb") as f:
        body = f.read()
    ok = verify_webhook(args.webhook_public_key, args.webhook_id, args.webhook_timestamp, body,
                        args.webhook_signature, tolerance=args.tolerance)
    print("verified" if ok else "NOT verified")
    return 0 if ok else 1


def vectors(args):
    """Check this program's canonicalization and signing against the published test vectors
    (docs/signing-test-vectors.json); no network needed."""
    with open(args.file, encoding="utf-8") as f:
        published = json.load(f)["vectors"]
    failed = 0
    for v in published:
        key = load_private_key(v["secretKeySeedHex"])
        payload = canonical({**v["body"], **v["pathIds"]})
        signature = sign(key, payload)
        public = key.public_key()
        tampered = payload[:-1] + ("]" if payload[-1] != "]" else "}")
        try:
            public.verify(bytes.fromhex(signature), tampered.encode("utf-8"))
            tamper_refused = False
        except InvalidSignature:
            tamper_refused = True
        ok = (public_key_hex(key) == v["publicKeyHex"] and payload == v["payload"]
              and signature == v["signatureHex"] and tamper_refused)
        failed += 0 if ok else 1
        print(f"{'ok  ' if ok else 'FAIL'} {v['name']}")
    print(f"{len(published) - failed} of {len(published)} vectors reproduced")
    return 1 if failed or not published else 0


def main(argv=None):
    env = os.environ.get
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command")

    def key_options(p):
        p.add_argument("--key", default=env("SETTLE_PARTNER_KEY"),
                       help="Ed25519 private key: the 32-byte seed as 64 hex characters [SETTLE_PARTNER_KEY]")
        p.add_argument("--key-file", default=env("SETTLE_PARTNER_KEY_FILE"),
                       help="Ed25519 private key as a PKCS#8 PEM file, instead of --key [SETTLE_PARTNER_KEY_FILE]")

    p = commands.add_parser("stage", help="stage a signed v2 settlement and verify its webhooks (default)")
    p.add_argument("--api", default=env("SETTLE_API", "http://127.0.0.1:8080"), help="API base URL [SETTLE_API]")
    p.add_argument("--token", default=env("SETTLE_TOKEN"), help="the partner user's bearer token [SETTLE_TOKEN]")
    p.add_argument("--enterprise", default=env("SETTLE_ENTERPRISE"), help="the partner's enterprise id [SETTLE_ENTERPRISE]")
    key_options(p)
    p.add_argument("--connection", default=env("SETTLE_CONNECTION"), help="a client's connection to this partner [SETTLE_CONNECTION]")
    p.add_argument("--currency", default=env("SETTLE_CURRENCY", "BTC"))
    p.add_argument("--amount", default=env("SETTLE_AMOUNT", "-1000000"),
                   help="signed amount in the partner's amountFormat (base units by default); "
                        "negative: the connection loses [SETTLE_AMOUNT]")
    p.add_argument("--external-id", default=env("SETTLE_EXTERNAL_ID"), help="default: a fresh one")
    p.add_argument("--listen", default=env("SETTLE_WEBHOOK_LISTEN"),
                   help="HOST:PORT for the webhook receiver (the enterprise's webhook URL must point here) [SETTLE_WEBHOOK_LISTEN]")
    p.add_argument("--webhook-public-key", default=env("SETTLE_WEBHOOK_PUBLIC_KEY"),
                   help="the engine's webhook public key, 64 hex characters [SETTLE_WEBHOOK_PUBLIC_KEY]")
    p.add_argument("--record", default=env("SETTLE_WEBHOOK_RECORD"),
                   help="write one verified delivery's body to this file (headers to FILE.headers.json) [SETTLE_WEBHOOK_RECORD]")
    p.add_argument("--webhook-timeout", type=float, default=float(env("SETTLE_WEBHOOK_TIMEOUT", "60")))

    p = commands.add_parser("public-key", help="print the public key (hex) to register for the enterprise")
    key_options(p)

    p = commands.add_parser("verify", help="verify one recorded webhook delivery")
    p.add_argument("--webhook-public-key", default=env("SETTLE_WEBHOOK_PUBLIC_KEY"), required=False)
    p.add_argument("--body", required=True, help="file holding the exact body received")
    p.add_argument("--webhook-id", required=True)
    p.add_argument("--webhook-timestamp", required=True)
    p.add_argument("--webhook-signature", required=True)
    p.add_argument("--tolerance", type=float, default=float("inf"),
                   help="seconds the timestamp may be off now (default: any, for a recorded delivery)")

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ("stage", "public-key", "verify", "vectors", "-h", "--help"):
        argv.insert(0, "stage")
    p = commands.add_parser("vectors", help="check canonicalization and signing against the published test vectors")
    p.add_argument("--file", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                  "..", "..", "signing-test-vectors.json"))

    args = parser.parse_args(argv)
    command = args.command
    if command == "public-key":
        print(public_key_hex(load_private_key(args.key, args.key_file)))
        return 0
    if command == "vectors":
        return vectors(args)
    if command == "verify":
        if not args.webhook_public_key:
            parser.error("--webhook-public-key is required")
        return verify_recorded(args)
    missing = [name for name in ("token", "enterprise", "connection") if not getattr(args, name)]
    if args.listen and not args.webhook_public_key:
        missing.append("webhook_public_key")
    if missing:
        parser.error("missing: " + ", ".join("--" + m.replace("_", "-") for m in missing))
    return stage(args)


if __name__ == "__main__":
    sys.exit(main())
