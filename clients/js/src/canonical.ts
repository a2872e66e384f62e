/**
 * Canonical ticket bytes and the scope checksum (SPEC §7), byte for byte what the server computes, so a device can
 * prove its replica equals the server's view of its scope (I4) without downloading it again.
 */

import type { Ticket } from "./wire.js";

const DOMAIN = new TextEncoder().encode("fieldsync-scope-v1\0");
const MOD = 1n << 256n;

/**
 * A double as Python's `repr` writes it: the shortest round-tripping digits (which JavaScript also produces), fixed
 * notation for decimal exponents -4..15 with a `.0` on integral values, otherwise `1e-05` / `1.5e+16` style.
 */
export function pythonFloat(x: number): string {
  if (!Number.isFinite(x)) throw new RangeError("canonical form has no NaN or Infinity");
  if (x === 0) return Object.is(x, -0) ? "-0.0" : "0.0";
  const sign = x < 0 ? "-" : "";
  const [mant, expText] = Math.abs(x).toExponential().split("e") as [string, string];
  const digits = mant.replace(".", "");
  const exp = Number(expText);
  if (exp < -4 || exp >= 16) {
    const m = digits.length > 1 ? `${digits[0]}.${digits.slice(1)}` : digits;
    const e = Math.abs(exp).toString().padStart(2, "0");
    return `${sign}${m}e${exp < 0 ? "-" : "+"}${e}`;
  }
  if (exp < 0) return `${sign}0.${"0".repeat(-exp - 1)}${digits}`;
  const intLen = exp + 1;
  if (digits.length <= intLen) return `${sign}${digits}${"0".repeat(intLen - digits.length)}.0`;
  return `${sign}${digits.slice(0, intLen)}.${digits.slice(intLen)}`;
}

/** A value rendered as Python's json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False) would. */
function render(value: unknown, floatKeys: ReadonlySet<string>, key: string | null): string {
  if (value === null || value === undefined) return "null";
  if (typeof value === "boolean") return value ? "true" : "false";
  if (typeof value === "number") {
    if (key !== null && floatKeys.has(key)) return pythonFloat(value);
    if (!Number.isInteger(value)) return pythonFloat(value);
    return value.toString();
  }
  if (typeof value === "string") return JSON.stringify(value); // same escapes as Python for valid Unicode text
  if (Array.isArray(value)) return `[${value.map((v) => render(v, floatKeys, null)).join(",")}]`;
  if (typeof value === "object") {
    const obj = value as Record<string, unknown>;
    const keys = Object.keys(obj).sort(byCodePoint);
    return `{${keys.map((k) => `${JSON.stringify(k)}:${render(obj[k], floatKeys, k)}`).join(",")}}`;
  }
  throw new TypeError(`no canonical form for ${typeof value}`);
}

/** Python sorts str by code point; JavaScript's default sort uses UTF-16 units, which differs above U+FFFF. */
function byCodePoint(a: string, b: string): number {
  const x = Array.from(a, (c) => c.codePointAt(0)!);
  const y = Array.from(b, (c) => c.codePointAt(0)!);
  for (let i = 0; i < Math.min(x.length, y.length); i++) if (x[i] !== y[i]) return x[i]! - y[i]!;
  return x.length - y.length;
}

function cmp(a: string, b: string): number {
  return byCodePoint(a, b);
}

const DT = /^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,6}))?(Z|z|[+-]\d{2}:?\d{2})$/;

/**
 * A wire datetime in the canonical UTC form `YYYY-MM-DDTHH:MM:SS.ffffffZ` (SPEC §1, §7). Microseconds are kept as
 * text (a JS Date has only milliseconds); only whole minutes of offset are applied, which is all ISO offsets carry.
 */
export function canonicalDatetime(value: string): string {
  const m = DT.exec(value);
  if (m === null) return value; // not a datetime we understand: leave it, the checksum will flag the difference
  const [, y, mo, d, h, mi, sec, frac, tz] = m as unknown as [string, string, string, string, string, string, string, string | undefined, string];
  let offsetMin = 0;
  if (tz !== "Z" && tz !== "z") {
    const sign = tz.startsWith("-") ? -1 : 1;
    const digits = tz.slice(1).replace(":", "");
    offsetMin = sign * (Number(digits.slice(0, 2)) * 60 + Number(digits.slice(2, 4)));
  }
  const ms = Date.UTC(Number(y), Number(mo) - 1, Number(d), Number(h), Number(mi) - offsetMin, Number(sec));
  const iso = new Date(ms).toISOString(); // YYYY-MM-DDTHH:MM:SS.000Z
  return `${iso.slice(0, 19)}.${(frac ?? "").padEnd(6, "0")}Z`;
}

function dtOrNull(v: string | null | undefined): string | null {
  return v === null || v === undefined ? null : canonicalDatetime(v);
}

// Fields whose values are floats in the ticket model (SPEC §3): 34.0 must render as "34.0", not "34".
const FLOAT_KEYS: ReadonlySet<string> = new Set(["lat", "lon"]);

/** Every field of a ticket present (null/empty when missing), collections in their canonical set order. */
export function normalizeTicket(t: Ticket): Ticket {
  return {
    id: t.id.toLowerCase(),
    sr_number: t.sr_number ?? null,
    service_type: t.service_type,
    department: t.department,
    status: t.status,
    priority: t.priority,
    address: t.address,
    zip: t.zip ?? null,
    lat: t.lat ?? null,
    lon: t.lon ?? null,
    council_district: t.council_district ?? null,
    description: t.description ?? "",
    source: t.source ?? null,
    requested_at: canonicalDatetime(t.requested_at),
    service_date: t.service_date ?? null,
    due_at: dtOrNull(t.due_at),
    crew: t.crew ?? null,
    notes: [...(t.notes ?? [])]
      .map((n) => ({ id: n.id.toLowerCase(), text: n.text, author: n.author, device_time: dtOrNull(n.device_time), created_at: canonicalDatetime(n.created_at) }))
      .sort((a, b) => cmp(a.created_at, b.created_at) || cmp(a.id, b.id)),
    photos: [...(t.photos ?? [])]
      .map((p) => ({ sha256: p.sha256, kind: p.kind, taken_at: canonicalDatetime(p.taken_at), state: p.state, lat: p.lat ?? null, lon: p.lon ?? null }))
      .sort((a, b) => cmp(a.sha256, b.sha256) || cmp(a.kind, b.kind)),
    items: [...(t.items ?? [])].map((i) => ({ item_type: i.item_type, count: i.count })).sort((a, b) => cmp(a.item_type, b.item_type)),
    resolution_code: t.resolution_code ?? null,
    reason_code: t.reason_code ?? null,
    created_by_device: t.created_by_device ?? null,
    updated_at: canonicalDatetime(t.updated_at),
    version: t.version,
  };
}

/** The canonical UTF-8 bytes of one ticket state. */
export function canonicalBytes(t: Ticket): Uint8Array {
  return new TextEncoder().encode(render(normalizeTicket(t), FLOAT_KEYS, null));
}

async function sha256(bytes: Uint8Array): Promise<Uint8Array> {
  return new Uint8Array(await globalThis.crypto.subtle.digest("SHA-256", bytes as Uint8Array<ArrayBuffer>));
}

/** Lowercase hex of bytes. */
export function toHex(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** SHA-256 of the canonical bytes, with WebCrypto (browser and Node 20 alike). */
export async function ticketHash(t: Ticket): Promise<Uint8Array> {
  return sha256(canonicalBytes(t));
}

function toBigInt(bytes: Uint8Array): bigint {
  return BigInt(`0x${toHex(bytes) || "0"}`);
}

function bigToBytes(n: bigint, len: number): Uint8Array {
  const out = new Uint8Array(len);
  let v = n;
  for (let i = len - 1; i >= 0; i--) {
    out[i] = Number(v & 0xffn);
    v >>= 8n;
  }
  return out;
}

/** The scope checksum of a set of tickets: sum of ticket hashes mod 2^256 with the count, hashed with a domain tag. */
export async function scopeChecksum(tickets: Iterable<Ticket>): Promise<string> {
  let total = 0n;
  let count = 0n;
  // digests in parallel: WebCrypto runs them off the main thread, so a 1,000-ticket scope is not 1,000 round trips
  for (const h of await Promise.all(Array.from(tickets, ticketHash))) {
    total = (total + toBigInt(h)) % MOD;
    count += 1n;
  }
  const state = new Uint8Array(DOMAIN.length + 8 + 32);
  state.set(DOMAIN, 0);
  state.set(bigToBytes(count, 8), DOMAIN.length);
  state.set(bigToBytes(total, 32), DOMAIN.length + 8);
  return toHex(await sha256(state));
}

/** Hex SHA-256 of photo bytes: a photo's identity on the wire (I8). */
export async function sha256Hex(bytes: Uint8Array): Promise<string> {
  return toHex(await sha256(bytes));
}
