/** Capped exponential back-off with full jitter, honouring a server's Retry-After: what every retry loop uses. */

export interface BackoffPolicy {
  /** First delay ceiling in milliseconds. */
  baseMs: number;
  /** Largest delay ceiling in milliseconds. */
  capMs: number;
}

export const DEFAULT_BACKOFF: BackoffPolicy = { baseMs: 500, capMs: 30_000 };

/**
 * Delay before retry number `attempt` (0-based): uniform in [0, min(cap, base·2^attempt)] ("full jitter", so a fleet
 * that lost signal together does not come back in lockstep), but never shorter than Retry-After.
 */
export function backoffDelay(attempt: number, policy: BackoffPolicy = DEFAULT_BACKOFF, retryAfterS: number | null = null,
  random: () => number = Math.random): number {
  const ceiling = Math.min(policy.capMs, policy.baseMs * 2 ** Math.min(attempt, 30));
  const jittered = Math.floor(random() * ceiling);
  return retryAfterS === null ? jittered : Math.max(jittered, Math.ceil(retryAfterS * 1000));
}

/** A sleep that an AbortSignal cuts short (resolves early, never rejects), so stop() and online events are prompt. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done(): void {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    }
    signal?.addEventListener("abort", done, { once: true });
  });
}
