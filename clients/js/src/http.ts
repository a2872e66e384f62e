/** The sync endpoints over fetch: protocol headers on every request, the error envelope turned into ProtocolError. */

import { decodeBody, encodeBody, type Media, mediaOf } from "./codec.js";
import { NetworkError, ProtocolError, parseRetryAfter } from "./errors.js";
import { type ErrorEnvelope, PROTOCOL_VERSION, type PullRequest, type PullResponse, type PushRequest,
  type PushResponse, VERSION_HEADER } from "./wire.js";

export type FetchLike = (input: string, init: RequestInit) => Promise<Response>;

export interface TransportOptions {
  /** Server origin, e.g. "https://fieldsync.example.org" (no trailing slash needed). */
  baseUrl: string;
  token: string;
  /** Body encoding; msgpack unless told otherwise (JSON is the fallback for debugging or constrained clients). */
  media?: Media;
  fetch?: FetchLike;
  /** Per-request timeout in milliseconds. */
  timeoutMs?: number;
}

function isEnvelope(v: unknown): v is ErrorEnvelope {
  if (typeof v !== "object" || v === null || !("error" in v)) return false;
  const e = (v as { error: unknown }).error;
  return typeof e === "object" && e !== null && typeof (e as { code: unknown }).code === "string";
}

/** One device's HTTP client for pull and push. */
export class Transport {
  readonly baseUrl: string;
  readonly token: string;
  readonly media: Media;
  private readonly fetchFn: FetchLike;
  private readonly timeoutMs: number;

  constructor(opts: TransportOptions) {
    this.baseUrl = opts.baseUrl.replace(/\/+$/, "");
    this.token = opts.token;
    this.media = opts.media ?? "application/msgpack";
    this.fetchFn = opts.fetch ?? ((input, init) => globalThis.fetch(input, init));
    this.timeoutMs = opts.timeoutMs ?? 30_000;
  }

  /** Headers every request carries (SPEC §1). */
  headers(body: boolean): Record<string, string> {
    const h: Record<string, string> = {
      Authorization: `Bearer ${this.token}`,
      [VERSION_HEADER]: String(PROTOCOL_VERSION),
      Accept: this.media,
    };
    if (body) h["Content-Type"] = this.media;
    return h;
  }

  /** POST a message and decode the answer; throws ProtocolError (non-2xx) or NetworkError (no answer). */
  post<T>(path: string, body: unknown, signal?: AbortSignal): Promise<T> {
    return this.request<T>("POST", path, body, signal);
  }

  /** GET a resource (e.g. /v1/catalog) in the same encoding and error model. */
  get<T>(path: string, signal?: AbortSignal): Promise<T> {
    return this.request<T>("GET", path, undefined, signal);
  }

  private async request<T>(method: string, path: string, body: unknown, signal?: AbortSignal): Promise<T> {
    const timeout = AbortSignal.timeout(this.timeoutMs);
    const combined = signal ? AbortSignal.any([signal, timeout]) : timeout;
    let resp: Response;
    let bytes: Uint8Array;
    try {
      resp = await this.fetchFn(this.baseUrl + path, {
        method,
        headers: this.headers(body !== undefined),
        body: body === undefined ? undefined : (encodeBody(body, this.media) as Uint8Array<ArrayBuffer>),
        signal: combined,
        cache: "no-store",
      });
      bytes = new Uint8Array(await resp.arrayBuffer());
    } catch (err) {
      throw new NetworkError(`${path}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
    }
    const media = mediaOf(resp.headers.get("Content-Type"));
    let decoded: unknown = null;
    let decodeFailed = false;
    if (media !== null && bytes.length > 0) {
      try {
        decoded = decodeBody(bytes, media);
      } catch {
        decodeFailed = true;
      }
    }
    if (!resp.ok) {
      const retryAfter = parseRetryAfter(resp.headers.get("Retry-After"));
      if (isEnvelope(decoded)) {
        const e = decoded.error;
        throw new ProtocolError(resp.status, e.code, e.message ?? "", e.details ?? {}, retryAfter);
      }
      throw new ProtocolError(resp.status, resp.status >= 500 ? "internal_error" : "unknown", `HTTP ${resp.status}`, {}, retryAfter);
    }
    if (media === null || decodeFailed) throw new ProtocolError(resp.status, "internal_error", "unreadable response body");
    return decoded as T;
  }

  /** One pull page. */
  pull(req: PullRequest, signal?: AbortSignal): Promise<PullResponse> {
    return this.post<PullResponse>("/v1/sync/pull", req, signal);
  }

  /** One push batch. */
  push(req: PushRequest, signal?: AbortSignal): Promise<PushResponse> {
    return this.post<PushResponse>("/v1/sync/push", req, signal);
  }
}
