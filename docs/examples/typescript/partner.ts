// Partner example (TypeScript, Node 20): sign and stage a v2 settlement through the API, and verify the engine's signed webhooks.
//
// What it does, in order (the same as docs/examples/python/partner.py):
//  1. builds a v2 settlement body (one instruction: a connection gains or loses an amount of one
//     currency) and asks the route's signing twin, `POST …/partners/settlements-signing`, for the
//     canonical payload — and checks that its own canonicalization gives the same string;
//  2. signs the exact UTF-8 bytes of that payload with the partner's Ed25519 key
//     (`crypto.sign(null, …)`);
//  3. sends the signed request to `POST /api/network/v2/enterprises/{e}/partners/settlements`,
//     prints the reply, and sends it once more unchanged (a retry is idempotent);
//  4. with `--listen`, runs a small webhook receiver, waits for the engine's
//     `settlement.finalized` and `settlement.completed` notifications of this settlement,
//     verifies each signature with the engine's webhook public key (`verifyWebhook` below), and
//     shows that a tampered body or a stale timestamp fails verification.
// `vectors` checks the canonicalization and signing here against the published test vectors
// (docs/signing-test-vectors.json), offline; `verify` checks one recorded webhook delivery.
// The last line printed is a JSON summary; the exit status is 0 only if every step succeeded.
//
// The key: `--key` takes the 32-byte Ed25519 private key (the seed) as 64 hex characters — the
// "seed" that `command-api keygen` prints; `--key-file` takes a PKCS#8 PEM file instead
// (`openssl genpkey -algorithm ed25519 -out partner.pem`). `public-key` prints the 32-byte public
// key as hex, the form the operator registers (`POST /api/admin/v1/enterprises/{e}/keys`).
//
// Only Node's built-ins: crypto, http, fetch. Build and run: `npm ci && npx tsc -p . && node
// dist/partner.js stage --help`. Every option also has an environment variable (SETTLE_API, …).

import { createPrivateKey, createPublicKey, randomUUID, sign, verify, KeyObject } from "node:crypto";
import { readFileSync } from "node:fs";
import { createServer, Server } from "node:http";
import { fileURLToPath } from "node:url";

/** How old (or how far in the future) a webhook timestamp may be before it is refused. */
export const WEBHOOK_TOLERANCE_SECONDS = 5 * 60;

// --- keys ----------------------------------------------------------------------------------

// DER prefixes that wrap a raw 32-byte Ed25519 key (RFC 8410): PKCS#8 private, SPKI public.
const PKCS8_ED25519_PREFIX = Buffer.from("302e020100300506032b657004220420", "hex");
const SPKI_ED25519_PREFIX = Buffer.from("302a300506032b6570032100", "hex");

/** The partner's signing key: 64 hex characters (the 32-byte seed) or a PKCS#8 PEM file. */
export function loadPrivateKey(keyHex?: string, keyFile?: string): KeyObject {
  if (keyFile) {
    const key = createPrivateKey(readFileSync(keyFile));
    if (key.asymmetricKeyType !== "ed25519") throw new Error(`${keyFile} does not hold an Ed25519 private key`);
    return key;
  }
  if (keyHex) {
    const seed = Buffer.from(keyHex.trim(), "hex");
    if (seed.length !== 32 || keyHex.trim().length !== 64) {
      throw new Error("--key must be 64 hex characters (the 32-byte Ed25519 seed)");
    }
    return createPrivateKey({ key: Buffer.concat([PKCS8_ED25519_PREFIX, seed]), format: "der", type: "pkcs8" });
  }
  throw new Error("give --key (hex seed) or --key-file (PEM)");
}

/** The raw 32-byte public key as hex: what the operator registers for the enterprise. */
export function publicKeyHex(privateKey: KeyObject): string {
  const der = createPublicKey(privateKey).export({ format: "der", type: "spki" });
  return der.subarray(SPKI_ED25519_PREFIX.length).toString("hex");
}

function publicKeyFromHex(hex: string): KeyObject {
  const raw = Buffer.from(hex, "hex");
  if (raw.length !== 32) throw new Error("a public key is 64 hex characters");
  return createPublicKey({ key: Buffer.concat([SPKI_ED25519_PREFIX, raw]), format: "der", type: "spki" });
}

// --- request signing (SPEC §4) -------------------------------------------------------------

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** The canonical payload (docs/signing-test-vectors.md): compact JSON, keys sorted by code
 * point at every level, strings escaping only `"`, `\` and control characters. */
export function canonical(value: Json): string {
  if (value === null || typeof value === "boolean" || typeof value === "number") return JSON.stringify(value);
  if (typeof value === "string") {
    // JSON.stringify escapes exactly `"`, `\` and U+0000–U+001F (lone surrogates aside).
    return JSON.stringify(value);
  }
  if (Array.isArray(value)) return `[${value.map(canonical).join(",")}]`;
  const keys = Object.keys(value).sort((a, b) => (Buffer.compare(Buffer.from(a), Buffer.from(b))));
  return `{${keys.map((k) => `${JSON.stringify(k)}:${canonical(value[k] as Json)}`).join(",")}}`;
}

/** Hex of the Ed25519 signature of the exact UTF-8 bytes of `payload`. */
export function signPayload(privateKey: KeyObject, payload: string): string {
  return sign(null, Buffer.from(payload, "utf8"), privateKey).toString("hex");
}

interface Reply {
  status: number;
  headers: Headers;
  body: any;
}

/** A tiny JSON client over fetch. */
class Api {
  constructor(private readonly base: string, private readonly token: string) {
    this.base = base.replace(/\/+$/, "");
  }

  async call(method: string, path: string, body?: Json, headers: Record<string, string> = {}): Promise<Reply> {
    const response = await fetch(this.base + path, {
      method,
      headers: {
        Authorization: `Bearer ${this.token}`,
        Accept: "application/json",
        ...(body === undefined ? {} : { "Content-Type": "application/json" }),
        ...headers,
      },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(30_000),
    });
    const text = await response.text();
    let parsed: any;
    try {
      parsed = text ? JSON.parse(text) : null;
    } catch {
      parsed = { error: text };
    }
    return { status: response.status, headers: response.headers, body: parsed };
  }
}

/** Ask the signing twin for the payload, sign it, send fields + payload + signature. */
async function signedRequest(api: Api, path: string, signingPath: string, fields: { [key: string]: Json }, key: KeyObject) {
  const twin = await api.call("POST", signingPath, fields);
  if (twin.status !== 200) throw new Error(`signing twin ${signingPath} answered ${twin.status}: ${JSON.stringify(twin.body)}`);
  const payload: string = twin.body.payload;
  // The twin's string is the one to sign. A partner that builds payloads itself can check its
  // canonicalization against it (settlements have no path ids, so the payload is the fields).
  const matches = payload === canonical(fields);
  const body = { ...fields, payload, signature: signPayload(key, payload) };
  const reply = await api.call("POST", path, body);
  return { reply, body, matches };
}

// --- webhook verification (Standard Webhooks, scheme v1a; docs/decisions/0005) ------------

/** Whether a delivery is the engine's: some `v1a,<base64>` entry of `webhook-signature` is an
 * Ed25519 signature of `${webhook-id}.${webhook-timestamp}.` + body under the engine's public
 * key, and the timestamp is within `tolerance` seconds of now. `body` is the exact bytes
 * received — verify before parsing it. */
export function verifyWebhook(
  publicKey: string,
  webhookId: string | undefined,
  webhookTimestamp: string | undefined,
  body: Buffer,
  signatureHeader: string | undefined,
  now: number = Date.now() / 1000,
  tolerance: number = WEBHOOK_TOLERANCE_SECONDS,
): boolean {
  if (!webhookId || !webhookTimestamp || !signatureHeader) return false;
  if (!/^[0-9]+$/.test(webhookTimestamp)) return false;
  if (Math.abs(now - Number(webhookTimestamp)) > tolerance) return false;
  const key = publicKeyFromHex(publicKey);
  const signedContent = Buffer.concat([Buffer.from(`${webhookId}.${webhookTimestamp}.`, "utf8"), body]);
  // Several space-separated entries may be present while the engine rotates its key.
  return signatureHeader.split(" ").some((entry) => {
    const comma = entry.indexOf(",");
    if (comma < 0 || entry.slice(0, comma) !== "v1a") return false;
    const encoded = entry.slice(comma + 1);
    if (!/^[A-Za-z0-9+/]*={0,2}$/.test(encoded)) return false;
    const signature = Buffer.from(encoded, "base64");
    return signature.length === 64 && verify(null, signedContent, key, signature);
  });
}

interface Delivery {
  headers: { id: string; timestamp: string; signature: string };
  body: Buffer;
  notification: { type: string; settlementId?: string; [key: string]: unknown };
}

/** A local webhook receiver: verifies every delivery, answers 204 (accepted) or 401, and keeps
 * the verified notifications (deduplicated on webhook-id: delivery is at least once). */
class Receiver {
  readonly deliveries = new Map<string, Delivery>();
  refused = 0;
  private readonly server: Server;
  private waiters: (() => void)[] = [];

  private constructor(private readonly publicKey: string) {
    this.server = createServer((request, response) => {
      const chunks: Buffer[] = [];
      request.on("data", (chunk: Buffer) => chunks.push(chunk));
      request.on("end", () => {
        const body = Buffer.concat(chunks);
        const header = (name: string) => {
          const value = request.headers[name];
          return Array.isArray(value) ? value.join(" ") : value;
        };
        const [id, timestamp, signature] = ["webhook-id", "webhook-timestamp", "webhook-signature"].map(header);
        if (request.method !== "POST" || !verifyWebhook(this.publicKey, id, timestamp, body, signature)) {
          this.refused += 1;
          response.writeHead(401).end();
          return;
        }
        if (!this.deliveries.has(id!)) {
          this.deliveries.set(id!, {
            headers: { id: id!, timestamp: timestamp!, signature: signature! },
            body,
            notification: JSON.parse(body.toString("utf8")),
          });
          this.waiters.splice(0).forEach((wake) => wake());
        }
        response.writeHead(204).end();
      });
    });
  }

  static async start(listen: string, publicKey: string): Promise<Receiver> {
    const receiver = new Receiver(publicKey);
    const colon = listen.lastIndexOf(":");
    const host = colon > 0 ? listen.slice(0, colon) : "127.0.0.1";
    await new Promise<void>((resolve, reject) => {
      receiver.server.once("error", reject);
      receiver.server.listen(Number(listen.slice(colon + 1)), host, resolve);
    });
    return receiver;
  }

  /** The verified deliveries of `settlementId` once every type in `types` has arrived (or what
   * has arrived when `timeoutMs` has passed). */
  async waitFor(settlementId: string, types: string[], timeoutMs: number): Promise<Delivery[]> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const mine = [...this.deliveries.values()].filter((d) => d.notification.settlementId === settlementId);
      const seen = new Set(mine.map((d) => d.notification.type));
      const left = deadline - Date.now();
      if (types.every((t) => seen.has(t)) || left <= 0) return mine;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  close(): Promise<void> {
    this.server.closeAllConnections();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

// --- the program ---------------------------------------------------------------------------

interface Options {
  api: string;
  token?: string;
  enterprise?: string;
  key?: string;
  keyFile?: string;
  connection?: string;
  currency: string;
  amount: string;
  externalId?: string;
  listen?: string;
  webhookPublicKey?: string;
  webhookTimeout: number;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function stage(o: Options): Promise<number> {
  const key = loadPrivateKey(o.key, o.keyFile);
  const api = new Api(o.api, o.token!);
  const checks: Record<string, boolean> = {};
  const receiver = o.listen ? await Receiver.start(o.listen, o.webhookPublicKey!) : undefined;
  try {
    const partners = `/api/network/v1/enterprises/${o.enterprise}/partners`;
    const stagePath = `/api/network/v2/enterprises/${o.enterprise}/partners/settlements`;
    const fields = {
      externalId: o.externalId ?? `example-ts-${randomUUID()}`,
      settlementAmounts: { [o.connection!]: { [o.currency]: o.amount } },
      cutoffAt: new Date().toISOString(),
      nonce: randomUUID(),
    };
    // (1)–(3): the canonical payload from the twin, signed, sent.
    const { reply, body, matches } = await signedRequest(api, stagePath, `${partners}/settlements-signing`, fields, key);
    const position = reply.headers.get("X-Event-Position");
    console.log(`POST v2 settlements -> ${reply.status} (request ${reply.headers.get("X-Request-Id")}, position ${position})`);
    console.log(JSON.stringify(reply.body, null, 2));
    checks.canonicalPayloadMatches = matches;
    const settlement = reply.body?.settlement ?? {};
    checks.staged = reply.status === 200 && settlement.status === "pending";
    const settlementId: string = settlement.id;

    // A retry of the very same signed body (same nonce, same payload) is idempotent: the
    // original settlement comes back and nothing changes. Retry like this on timeouts.
    const retry = await api.call("POST", stagePath, body);
    checks.retryIdempotent = retry.status === 200 && retry.body?.settlement?.id === settlementId;

    // Read it back; X-Min-Position makes the read wait for the projection to reach the write.
    const read = await api.call("GET", `${partners}/settlements/${settlementId}`, undefined,
      position ? { "X-Min-Position": position } : {});
    checks.readBack = read.status === 200 && read.body.settlement.id === settlementId;

    // (4): the engine's notifications about this settlement, verified on arrival.
    const webhooks: { type: string; verified: boolean }[] = [];
    if (receiver) {
      const wanted = ["settlement.finalized", "settlement.completed"];
      const delivered = await receiver.waitFor(settlementId, wanted, o.webhookTimeout * 1000);
      for (const d of delivered) {
        console.log(`webhook ${d.notification.type} ${d.headers.id}: signature verified`);
        webhooks.push({ type: d.notification.type, verified: true });
      }
      checks.webhooksVerified = wanted.every((t) => webhooks.some((w) => w.type === t));
      const d = delivered[0];
      if (d) {
        const { id, timestamp, signature } = d.headers;
        const tampered = Buffer.from(d.body.toString("utf8").replace('"settlementId"', '"settlementID"'), "utf8");
        checks.tamperedBodyRejected = !verifyWebhook(o.webhookPublicKey!, id, timestamp, tampered, signature);
        checks.staleTimestampRejected = !verifyWebhook(o.webhookPublicKey!, id, timestamp, d.body, signature,
          Number(timestamp) + WEBHOOK_TOLERANCE_SECONDS + 1);
      } else {
        checks.tamperedBodyRejected = false;
        checks.staleTimestampRejected = false;
      }
      checks.noDeliveryRefused = receiver.refused === 0;
    }

    // The settlement's state now: with a receiver, wait (briefly) until the read side shows the
    // execution the webhook announced; reads may lag a moment behind.
    const deadline = Date.now() + (receiver ? o.webhookTimeout * 1000 : 0);
    let state: string | null = null;
    for (;;) {
      const now = await api.call("GET", `${partners}/settlements/${settlementId}`);
      state = now.status === 200 ? now.body.settlement.status : null;
      if (state === "completed" || state === "failed" || Date.now() >= deadline) break;
      await sleep(200);
    }
    const ok = Object.values(checks).every(Boolean);
    console.log(JSON.stringify({
      example: "typescript",
      settlementId,
      stagedStatus: settlement.status ?? null,
      status: state,
      webhooks,
      checks,
      ok,
    }));
    return ok ? 0 : 1;
  } finally {
    await receiver?.close();
  }
}

/** Verify one recorded delivery: the body file and the three headers as given. */
function verifyRecorded(flags: Map<string, string>): number {
  const need = (name: string) => {
    const value = flags.get(name) ?? (name === "webhook-public-key" ? process.env.SETTLE_WEBHOOK_PUBLIC_KEY : undefined);
    if (!value) throw new Error(`--${name} is required`);
    return value;
  };
  const tolerance = flags.has("tolerance") ? Number(flags.get("tolerance")) : Infinity;
  const ok = verifyWebhook(need("webhook-public-key"), need("webhook-id"), need("webhook-timestamp"),
    readFileSync(need("body")), need("webhook-signature"), Date.now() / 1000, tolerance);
  console.log(ok ? "verified" : "NOT verified");
  return ok ? 0 : 1;
}

/** Check this program's canonicalization and signing against the published test vectors
 * (docs/signing-test-vectors.json); no network needed. */
function vectors(file: string): number {
  const published: {
    name: string;
    secretKeySeedHex: string;
    pathIds: { [key: string]: Json };
    body: { [key: string]: Json };
    publicKeyHex: string;
    payload: string;
    signatureHex: string;
  }[] = JSON.parse(readFileSync(file, "utf8")).vectors;
  let failed = 0;
  for (const v of published) {
    const key = loadPrivateKey(v.secretKeySeedHex);
    const payload = canonical({ ...v.body, ...v.pathIds });
    const signature = signPayload(key, payload);
    const tampered = payload.slice(0, -1) + (payload.endsWith("]") ? "}" : "]");
    const tamperRefused = !verify(null, Buffer.from(tampered, "utf8"), createPublicKey(key), Buffer.from(signature, "hex"));
    const ok = publicKeyHex(key) === v.publicKeyHex && payload === v.payload && signature === v.signatureHex && tamperRefused;
    if (!ok) failed++;
    console.log(`${ok ? "ok  " : "FAIL"} ${v.name}`);
  }
  console.log(`${published.length - failed} of ${published.length} vectors reproduced`);
  return failed || !published.length ? 1 : 0;
}

const USAGE = `usage: node dist/partner.js [stage|public-key|verify] [--option value …]
  stage       stage a signed v2 settlement and verify its webhooks (default)
                --api URL [SETTLE_API, default http://127.0.0.1:8080]
                --token TOKEN            the partner user's bearer token [SETTLE_TOKEN]
                --enterprise ID          the partner's enterprise id [SETTLE_ENTERPRISE]
                --key HEX                Ed25519 private key: the 32-byte seed, 64 hex characters [SETTLE_PARTNER_KEY]
                --key-file PEM           Ed25519 private key as a PKCS#8 PEM file, instead [SETTLE_PARTNER_KEY_FILE]
                --connection ID          a client's connection to this partner [SETTLE_CONNECTION]
                --currency CODE          [SETTLE_CURRENCY, default BTC]
                --amount AMOUNT          signed, in the partner's amountFormat; negative: the connection loses [SETTLE_AMOUNT, default -1000000]
                --external-id ID         default: a fresh one [SETTLE_EXTERNAL_ID]
                --listen HOST:PORT       run the webhook receiver here (the enterprise's webhook URL must point here) [SETTLE_WEBHOOK_LISTEN]
                --webhook-public-key HEX the engine's webhook public key [SETTLE_WEBHOOK_PUBLIC_KEY]
                --webhook-timeout SECONDS [SETTLE_WEBHOOK_TIMEOUT, default 60]
  public-key  print the public key (hex) to register for the enterprise (--key or --key-file)
  vectors     check canonicalization and signing against the published test vectors [--file PATH]
  verify      verify one recorded delivery: --webhook-public-key --body FILE --webhook-id
              --webhook-timestamp --webhook-signature [--tolerance SECONDS, default any]`;

async function main(argv: string[]): Promise<number> {
  const commands = ["stage", "public-key", "verify", "vectors"];
  const command = argv[0] && commands.includes(argv[0]) ? argv.shift()! : "stage";
  const flags = new Map<string, string>();
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === "-h" || arg === "--help") {
      console.log(USAGE);
      return 0;
    }
    const value = argv[i + 1];
    if (!arg.startsWith("--") || value === undefined) {
      console.error(USAGE);
      return 2;
    }
    flags.set(arg.slice(2), value);
    i++;
  }
  const env = process.env;
  const opt = (flag: string, name: string) => flags.get(flag) ?? env[name];
  if (command === "public-key") {
    console.log(publicKeyHex(loadPrivateKey(opt("key", "SETTLE_PARTNER_KEY"), opt("key-file", "SETTLE_PARTNER_KEY_FILE"))));
    return 0;
  }
  if (command === "verify") return verifyRecorded(flags);
  if (command === "vectors") {
    // Beside the compiled file (dist/partner.js): ../../../signing-test-vectors.json is docs/.
    return vectors(flags.get("file") ?? fileURLToPath(new URL("../../../signing-test-vectors.json", import.meta.url)));
  }
  const o: Options = {
    api: opt("api", "SETTLE_API") ?? "http://127.0.0.1:8080",
    token: opt("token", "SETTLE_TOKEN"),
    enterprise: opt("enterprise", "SETTLE_ENTERPRISE"),
    key: opt("key", "SETTLE_PARTNER_KEY"),
    keyFile: opt("key-file", "SETTLE_PARTNER_KEY_FILE"),
    connection: opt("connection", "SETTLE_CONNECTION"),
    currency: opt("currency", "SETTLE_CURRENCY") ?? "BTC",
    amount: opt("amount", "SETTLE_AMOUNT") ?? "-1000000",
    externalId: opt("external-id", "SETTLE_EXTERNAL_ID"),
    listen: opt("listen", "SETTLE_WEBHOOK_LISTEN"),
    webhookPublicKey: opt("webhook-public-key", "SETTLE_WEBHOOK_PUBLIC_KEY"),
    webhookTimeout: Number(opt("webhook-timeout", "SETTLE_WEBHOOK_TIMEOUT") ?? "60"),
  };
  const missing = (["token", "enterprise", "connection"] as const).filter((k) => !o[k]);
  if (o.listen && !o.webhookPublicKey) missing.push("webhookPublicKey" as never);
  if (missing.length) {
    console.error(`missing: ${missing.join(", ")}\n${USAGE}`);
    return 2;
  }
  return stage(o);
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (error: unknown) => {
    console.error(error instanceof Error ? error.message : error);
    process.exit(1);
  },
);
