/**
 * Photo uploads over tus (SPEC §3 Uploads, I8) with tus-js-client. The photo's bytes and its upload URL live in
 * IndexedDB, so an app restart resumes at the server's offset (HEAD, then PATCH) instead of starting again; photos
 * never block ticket sync.
 */

import { Upload, type DetailedError } from "tus-js-client";
import { ProtocolError, NetworkError, parseRetryAfter } from "./errors.js";
import type { PhotoRecord, Store } from "./store.js";

export interface UploadOutcome {
  key: string;
  state: "uploaded" | "refused" | "retry";
  /** Seconds to wait before the next attempt (server's Retry-After or back-off), for `retry`. */
  retryAfter: number | null;
  error: string | null;
}

/** The input tus-js-client wants: a Buffer under Node (its Node build reads only Buffers/streams), a Blob in browsers. */
function uploadSource(bytes: Uint8Array, mime: string): Blob | Buffer {
  const nodeBuffer = (globalThis as { Buffer?: typeof Buffer }).Buffer;
  if (typeof window === "undefined" && nodeBuffer !== undefined) return nodeBuffer.from(bytes);
  return new Blob([bytes as BlobPart], { type: mime });
}

function errorCode(body: string): string | null {
  try {
    const v = JSON.parse(body) as { error?: { code?: unknown } };
    return typeof v.error?.code === "string" ? v.error.code : null;
  } catch {
    return null;
  }
}

/** Turn a tus-js-client failure into the protocol's typed error, so the same retry table decides. */
export function classifyUploadError(err: Error | DetailedError): ProtocolError | NetworkError {
  const res = (err as Partial<DetailedError>).originalResponse;
  if (res === undefined || res === null) return new NetworkError(err.message, { cause: err });
  const status = res.getStatus();
  if (status === 0) return new NetworkError(err.message, { cause: err });
  const code = errorCode(res.getBody()) ?? (status >= 500 || status === 429 ? "internal_error" : "unknown");
  return new ProtocolError(status, code, err.message, {}, parseRetryAfter(res.getHeader("Retry-After") ?? null));
}

export interface PhotoUploaderOptions {
  baseUrl: string;
  token: string;
  chunkSize?: number;
  /** Called with the bytes the server has acknowledged so far (its Upload-Offset), for a progress bar. */
  onProgress?: (key: string, accepted: number, total: number) => void;
}

/** Uploads one photo record to completion, failure or a retryable stop; persists the upload URL as soon as it exists. */
export async function uploadPhoto(store: Store, rec: PhotoRecord, opts: PhotoUploaderOptions, signal?: AbortSignal): Promise<UploadOutcome> {
  const metadata: Record<string, string> = {
    sha256: rec.sha256, ticket_id: rec.ticketId, kind: rec.kind, taken_at: rec.takenAt,
    filename: `${rec.sha256.slice(0, 12)}.${rec.mime === "image/png" ? "png" : "jpg"}`,
  };
  if (rec.lat !== null) metadata["lat"] = String(rec.lat);
  if (rec.lon !== null) metadata["lon"] = String(rec.lon);
  return new Promise<UploadOutcome>((resolve) => {
    const upload = new Upload(uploadSource(rec.bytes, rec.mime), {
      endpoint: `${opts.baseUrl.replace(/\/+$/, "")}/v1/uploads`,
      uploadUrl: rec.uploadUrl,
      metadata,
      headers: { Authorization: `Bearer ${opts.token}` },
      chunkSize: opts.chunkSize ?? 256 * 1024,
      retryDelays: null, // our own loop retries, with the protocol's table and jitter
      storeFingerprintForResuming: false,
      uploadSize: rec.bytes.length,
      onUploadUrlAvailable: () => {
        if (upload.url !== null && upload.url !== rec.uploadUrl) void store.putPhoto({ ...rec, uploadUrl: upload.url });
      },
      onChunkComplete: (_chunk, accepted, total) => opts.onProgress?.(rec.key, accepted, total),
      onSuccess: () => {
        void store.putPhoto({ ...rec, uploadUrl: upload.url, state: "uploaded", error: null })
          .then(() => resolve({ key: rec.key, state: "uploaded", retryAfter: null, error: null }));
      },
      onError: (err) => {
        const typed = classifyUploadError(err);
        if (typed.retryable) {
          const retryAfter = typed instanceof ProtocolError ? typed.retryAfter : null;
          resolve({ key: rec.key, state: "retry", retryAfter, error: typed.message });
          return;
        }
        const code = typed instanceof ProtocolError ? typed.code : "network";
        if (code === "upload_offset_mismatch" || code === "upload_expired" || (code === "not_found" && rec.uploadUrl !== null)) {
          // the session moved or vanished: forget the URL (a new upload starts next time) and try again
          void store.putPhoto({ ...rec, uploadUrl: code === "upload_offset_mismatch" ? upload.url : null })
            .then(() => resolve({ key: rec.key, state: "retry", retryAfter: 0, error: typed.message }));
          return;
        }
        void store.putPhoto({ ...rec, uploadUrl: upload.url, state: "refused", error: code })
          .then(() => resolve({ key: rec.key, state: "refused", retryAfter: null, error: code }));
      },
    });
    signal?.addEventListener("abort", () => {
      void upload.abort().then(() => resolve({ key: rec.key, state: "retry", retryAfter: 0, error: "aborted" }));
    }, { once: true });
    upload.start();
  });
}
