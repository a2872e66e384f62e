/** Body encoding (SPEC §1): msgpack by default, JSON as the fallback, same data model in both. */

import { decode as mpDecode, encode as mpEncode } from "@msgpack/msgpack";
import { JSON_MEDIA, MSGPACK } from "./wire.js";

export type Media = typeof MSGPACK | typeof JSON_MEDIA;

const MSGPACK_ALIASES = new Set([MSGPACK, "application/x-msgpack", "application/vnd.msgpack"]);

/** Encode a message; msgpack never carries bin/ext values because every value we send is a plain JSON value. */
export function encodeBody(value: unknown, media: Media): Uint8Array {
  if (media === MSGPACK) return mpEncode(value, { ignoreUndefined: true });
  return new TextEncoder().encode(JSON.stringify(value));
}

/** The media type of a response from its Content-Type header (parameters ignored), or null if neither encoding. */
export function mediaOf(contentType: string | null): Media | null {
  const base = (contentType ?? "").split(";")[0]!.trim().toLowerCase();
  if (MSGPACK_ALIASES.has(base)) return MSGPACK;
  if (base === JSON_MEDIA) return JSON_MEDIA;
  return null;
}

/** Decode a body in the given media type; throws on bytes that are not one value of that encoding. */
export function decodeBody(bytes: Uint8Array, media: Media): unknown {
  if (media === MSGPACK) return mpDecode(bytes);
  return JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes)) as unknown;
}
