/** Typed failures: a protocol error envelope, or a transport failure; `retryable` alone decides what a device does. */

import { ERROR_CODES } from "./wire.js";

/** A non-2xx answer carrying the protocol's error envelope (or a bare status when the body was unreadable). */
export class ProtocolError extends Error {
  readonly code: string;
  readonly status: number;
  readonly details: Readonly<Record<string, unknown>>;
  /** Seconds the server asked us to wait (Retry-After), if any. */
  readonly retryAfter: number | null;

  constructor(status: number, code: string, message: string, details: Record<string, unknown> = {}, retryAfter: number | null = null) {
    super(`${status} ${code}: ${message}`);
    this.name = "ProtocolError";
    this.status = status;
    this.code = code;
    this.details = details;
    this.retryAfter = retryAfter;
  }

  /** True when the code is one this client knows. Unknown codes are retried like internal_error, a few times (SPEC §4). */
  get known(): boolean {
    return Object.hasOwn(ERROR_CODES, this.code);
  }

  /** The protocol table decides; an unknown code or unreadable body is treated as a transient server failure. */
  get retryable(): boolean {
    const spec = ERROR_CODES[this.code];
    if (spec !== undefined) return spec.retry;
    return this.status >= 500 || this.status === 429;
  }
}

/** The request never got an HTTP answer (no signal, connection reset, timeout): always retryable. */
export class NetworkError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "NetworkError";
  }

  get retryable(): boolean {
    return true;
  }
}

/** Whether an error may be retried unchanged (with back-off). */
export function isRetryable(err: unknown): boolean {
  return err instanceof NetworkError || (err instanceof ProtocolError && err.retryable);
}

/** Parse a Retry-After header given in seconds (HTTP-date forms are rare from this server and ignored). */
export function parseRetryAfter(value: string | null): number | null {
  if (value === null) return null;
  const n = Number(value.trim());
  return Number.isFinite(n) && n >= 0 ? n : null;
}
