import { describe, expect, it } from "vitest";
import { backoffDelay } from "../../src/backoff.js";
import { NetworkError, ProtocolError, isRetryable } from "../../src/errors.js";

describe("backoffDelay", () => {
  const policy = { baseMs: 100, capMs: 1000 };
  it("is full jitter under a doubling, capped ceiling", () => {
    expect(backoffDelay(0, policy, null, () => 0.999)).toBe(99);
    expect(backoffDelay(3, policy, null, () => 0.5)).toBe(400);
    expect(backoffDelay(20, policy, null, () => 0.999)).toBe(999);
    expect(backoffDelay(5, policy, null, () => 0)).toBe(0);
  });
  it("never waits less than Retry-After", () => {
    expect(backoffDelay(0, policy, 2, () => 0.5)).toBe(2000);
    expect(backoffDelay(20, policy, 0.1, () => 0.999)).toBe(999);
  });
});

describe("retry table", () => {
  it("retries only codes the protocol marks retryable, and transport failures", () => {
    for (const code of ["rate_limited", "too_many_uploads", "service_unavailable", "internal_error"]) {
      expect(isRetryable(new ProtocolError(500, code, ""))).toBe(true);
    }
    for (const code of ["validation_failed", "malformed_body", "seq_gap", "reset_required", "unauthorized", "token_revoked",
      "upgrade_required", "cursor_invalid", "checksum_mismatch"]) {
      expect(isRetryable(new ProtocolError(400, code, ""))).toBe(false);
    }
    expect(isRetryable(new NetworkError("offline"))).toBe(true);
    // SPEC §4: an unknown code is treated like internal_error (retried, a bounded number of times by the client)
    expect(isRetryable(new ProtocolError(503, "brand_new_code", ""))).toBe(true);
    expect(new ProtocolError(503, "brand_new_code", "").known).toBe(false);
    expect(isRetryable(new Error("bug"))).toBe(false);
  });
});
