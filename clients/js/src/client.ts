/**
 * SyncClient: one crew device. Keeps the replica and outbox in IndexedDB, pushes with gap-free seqs and replay-safe
 * resends (I1), pulls atomic page sets (I7), verifies the scope checksum after every pull (I4) and uploads photos
 * over tus (I8). The UI reads views and subscribes to typed events; it never touches the wire.
 */

import { backoffDelay, type BackoffPolicy, DEFAULT_BACKOFF, sleep } from "./backoff.js";
import { scopeChecksum, sha256Hex } from "./canonical.js";
import type { Media } from "./codec.js";
import { Emitter } from "./events.js";
import { isRetryable, NetworkError, ProtocolError } from "./errors.js";
import { type FetchLike, Transport } from "./http.js";
import { LiveConnection, type WebSocketFactory } from "./live.js";
import { uploadPhoto } from "./photos.js";
import { type Meta, type Outcome, type PageSet, type PhotoRecord, Store } from "./store.js";
import { buildView, type TicketView } from "./view.js";
import type { Catalog, GeoPoint, ItemLine, Mutation, MutationResult, Op, OpArgs, PhotoKind, PullResponse, RemovalReason, Ticket } from "./wire.js";

export type SyncPhase = "idle" | "syncing" | "offline" | "error" | "blocked" | "stopped";

/** Everything a status bar shows. */
export interface SyncState {
  phase: SyncPhase;
  /** Mutations waiting in the outbox. */
  queued: number;
  /** Photos not yet fully uploaded. */
  photosPending: number;
  /** A photo upload is running right now. */
  photosUploading: boolean;
  lastSyncedAt: string | null;
  liveConnected: boolean;
  /** Protocol error code or "network" for the last failure, null when the last attempt worked. */
  lastError: string | null;
}

export interface SyncEvents {
  state: SyncState;
  /** The replica or the outbox changed: re-read `tickets()`. */
  changed: undefined;
  /** A mutation came back merged or rejected, or its ticket left the crew: tell the crew in words. */
  outcome: Outcome;
  /** A ticket left the crew's scope (pull removal or push result). */
  removed: { ticketId: string; reason: RemovalReason; label: string | null };
  /** Bytes of one photo the server has acknowledged so far. */
  photoProgress: { key: string; accepted: number; total: number };
}

export interface SyncClientOptions {
  baseUrl: string;
  token: string;
  /** IndexedDB database name; defaults to one per token so sign-ins never share a replica. */
  dbName?: string;
  media?: Media;
  fetch?: FetchLike;
  /** WebSocket factory for live pokes; null turns the live feed off. Defaults to the global WebSocket when present. */
  webSocket?: WebSocketFactory | null;
  /** Shown as the author of not-yet-synced notes. */
  author?: string;
  pageLimit?: number;
  pushBatch?: number;
  backoff?: BackoffPolicy;
  /** Seconds between background syncs when nothing pokes us. */
  pollIntervalS?: number;
  /** Current position for mutations' `gps`, if the app has one. */
  gps?: () => GeoPoint | null;
  uploadChunkSize?: number;
}

/** A checksum mismatch that survived a full resync: the replica cannot be proven equal to the server's. */
export class ChecksumError extends Error {
  constructor(readonly expected: string, readonly actual: string) {
    super(`scope checksum mismatch after resync: server ${expected}, replica ${actual}`);
    this.name = "ChecksumError";
  }
}

/** What one `sync()` did. */
export interface SyncReport {
  pushed: number;
  pulledPages: number;
  resyncs: number;
  watermark: number | null;
}

const FATAL_CODES = new Set(["unauthorized", "token_revoked", "upgrade_required", "forbidden"]);
const MAX_UNKNOWN_RETRIES = 3;
const MAX_PAGES = 10_000;
const SEQ_PROBE_JUMP = 1 << 30;

async function dbNameFor(baseUrl: string, token: string): Promise<string> {
  const h = await sha256Hex(new TextEncoder().encode(`${baseUrl}\n${token}`));
  return `fieldsync-${h.slice(0, 16)}`;
}

export class SyncClient {
  readonly events = new Emitter<SyncEvents>();
  private readonly transport: Transport;
  private readonly live: LiveConnection | null;
  private stateValue: SyncState = {
    phase: "idle", queued: 0, photosPending: 0, photosUploading: false, lastSyncedAt: null, liveConnected: false, lastError: null,
  };
  private running = false;
  private kickCtl = new AbortController();
  private kicked = false;
  private inFlight: Promise<SyncReport> | null = null;
  private photoLoop: Promise<void> | null = null;
  private photoKick = new AbortController();
  private unknownRetries = 0;

  private constructor(readonly store: Store, private readonly opts: SyncClientOptions) {
    this.transport = new Transport({ baseUrl: opts.baseUrl, token: opts.token, media: opts.media, fetch: opts.fetch });
    const factory = opts.webSocket === undefined ? defaultWebSocket() : opts.webSocket;
    this.live = factory === null ? null : new LiveConnection({
      baseUrl: opts.baseUrl, token: opts.token, factory, backoff: opts.backoff,
      onPoke: (wm) => void this.onPoke(wm),
      onConnected: (c) => this.setState({ liveConnected: c }),
      onFatal: (code) => this.setState({ phase: "blocked", lastError: code === 4003 ? "token_revoked" : "unauthorized" }),
    });
  }

  /** Open the device's store and read its state; call `run()` for background sync. */
  static async open(opts: SyncClientOptions): Promise<SyncClient> {
    const store = await Store.open(opts.dbName ?? (await dbNameFor(opts.baseUrl, opts.token)));
    const c = new SyncClient(store, opts);
    await c.refreshCounts();
    return c;
  }

  get state(): SyncState {
    return this.stateValue;
  }

  private setState(patch: Partial<SyncState>): void {
    this.stateValue = { ...this.stateValue, ...patch };
    this.events.emit("state", this.stateValue);
  }

  private async refreshCounts(): Promise<void> {
    const [queued, photos, meta] = await Promise.all([this.store.outboxCount(), this.store.photos(), this.store.meta()]);
    this.setState({ queued, photosPending: photos.filter((p) => p.state === "queued").length, lastSyncedAt: meta.lastSyncedAt });
  }

  // ------------------------------------------------------------------------------------------------ reads

  /** The crew's tickets as displayed: replica plus pending intents. */
  async tickets(): Promise<TicketView[]> {
    const [replica, outbox] = await Promise.all([this.store.tickets(), this.store.outbox()]);
    return buildView(replica, outbox.map((e) => e.mutation), this.opts.author ?? "this device");
  }

  async ticket(id: string): Promise<TicketView | undefined> {
    return (await this.tickets()).find((t) => t.id === id);
  }

  /** The replica exactly as the server last described it (no local overlay). */
  replica(): Promise<Ticket[]> {
    return this.store.tickets();
  }

  outcomes(): Promise<Outcome[]> {
    return this.store.outcomes();
  }

  meta(): Promise<Meta> {
    return this.store.meta();
  }

  /**
   * The department's catalogue (service types and their resolution/reason codes), fetched when online and kept for
   * offline use; null when the server has no catalogue endpoint and nothing is cached.
   */
  async catalog(refresh = true): Promise<Catalog | null> {
    if (refresh) {
      try {
        const cat = await this.transport.get<Catalog>("/v1/catalog");
        await this.store.setValue("catalog", cat);
        return cat;
      } catch (err) {
        if (!isRetryable(err) && !(err instanceof ProtocolError && (err.code === "not_found" || err.code === "method_not_allowed"))) throw err;
      }
    }
    return (await this.store.getValue<Catalog>("catalog")) ?? null;
  }

  /** Checksum of the replica as SPEC §7 defines it. */
  async replicaChecksum(): Promise<string> {
    return scopeChecksum(await this.store.tickets());
  }

  // ------------------------------------------------------------------------------------------------ intents

  /** Queue any op; the seq is assigned and persisted before this resolves (SPEC §5). */
  async queue<K extends Op>(op: K, ticketId: string, args: OpArgs[K], photos: PhotoRecord[] = []): Promise<Mutation> {
    const current = await this.store.ticket(ticketId);
    const deviceTime = new Date().toISOString();
    const gps = this.opts.gps?.() ?? null;
    const [m] = await this.store.enqueue((seq) => [{
      seq, op, ticket_id: ticketId, args, base_version: current?.version ?? null, device_time: deviceTime, gps,
    } as Mutation], photos);
    await this.refreshCounts();
    this.events.emit("changed", undefined);
    this.kick();
    if (photos.length > 0) this.kickPhotos();
    return m!;
  }

  acknowledge(ticketId: string): Promise<Mutation> { return this.queue("acknowledge", ticketId, {}); }
  start(ticketId: string): Promise<Mutation> { return this.queue("start", ticketId, {}); }
  pause(ticketId: string, reason: string | null = null): Promise<Mutation> { return this.queue("pause", ticketId, { reason }); }
  resume(ticketId: string): Promise<Mutation> { return this.queue("resume", ticketId, {}); }
  addNote(ticketId: string, text: string): Promise<Mutation> {
    return this.queue("add_note", ticketId, { note_id: globalThis.crypto.randomUUID(), text });
  }
  setItems(ticketId: string, items: ItemLine[]): Promise<Mutation> { return this.queue("set_items", ticketId, { items }); }
  setResolution(ticketId: string, resolutionCode: string): Promise<Mutation> {
    return this.queue("set_resolution", ticketId, { resolution_code: resolutionCode });
  }
  complete(ticketId: string, resolutionCode: string, note: string | null = null): Promise<Mutation> {
    return this.queue("complete", ticketId, { resolution_code: resolutionCode, note: note || null });
  }
  unableToComplete(ticketId: string, reasonCode: string, note: string | null = null): Promise<Mutation> {
    return this.queue("unable_to_complete", ticketId, { reason_code: reasonCode, note: note || null });
  }
  decline(ticketId: string, reasonCode: string, note: string | null = null): Promise<Mutation> {
    return this.queue("decline", ticketId, { reason_code: reasonCode, note: note || null });
  }
  /** Create and complete a proactive ticket; returns the mutation (its `ticket_id` is the new ticket's id). */
  selfReport(args: OpArgs["self_report"]): Promise<Mutation> {
    return this.queue("self_report", globalThis.crypto.randomUUID(), args);
  }

  /**
   * Keep a photo's bytes for upload and queue its `attach_photo` in one transaction, so neither exists without the
   * other after a crash. The upload runs in the background and never blocks ticket sync.
   */
  async attachPhoto(ticketId: string, kind: PhotoKind, bytes: Uint8Array,
    extra: { mime?: string; takenAt?: string; lat?: number | null; lon?: number | null; preview?: Uint8Array | null } = {}): Promise<Mutation> {
    const sha = await sha256Hex(bytes);
    const takenAt = extra.takenAt ?? new Date().toISOString();
    const rec: PhotoRecord = {
      key: `${ticketId}:${sha}:${kind}`, sha256: sha, ticketId, kind, takenAt, lat: extra.lat ?? null, lon: extra.lon ?? null,
      mime: extra.mime ?? "image/jpeg", bytes, preview: extra.preview ?? null, uploadUrl: null, state: "queued", error: null,
    };
    const args: OpArgs["attach_photo"] = { sha256: sha, kind, taken_at: takenAt };
    if (rec.lat !== null) args.lat = rec.lat;
    if (rec.lon !== null) args.lon = rec.lon;
    return this.queue("attach_photo", ticketId, args, [rec]);
  }

  // ------------------------------------------------------------------------------------------------ sync

  /** Push the whole outbox, then pull to the head; one at a time (a second call joins the running one). */
  sync(): Promise<SyncReport> {
    if (this.inFlight === null) {
      this.inFlight = this.syncInner().finally(() => {
        this.inFlight = null;
      });
    }
    return this.inFlight;
  }

  private async syncInner(): Promise<SyncReport> {
    this.setState({ phase: "syncing" });
    try {
      const pushed = await this.pushAll();
      const { pages, resyncs, watermark } = await this.pullAll();
      this.unknownRetries = 0;
      await this.refreshCounts();
      this.setState({ phase: "idle", lastError: null });
      return { pushed, pulledPages: pages, resyncs, watermark };
    } catch (err) {
      await this.refreshCounts();
      const code = err instanceof ProtocolError ? err.code : err instanceof NetworkError ? "network" : "error";
      const phase: SyncPhase = FATAL_CODES.has(code) ? "blocked" : err instanceof NetworkError ? "offline" : "error";
      this.setState({ phase, lastError: code });
      throw err;
    }
  }

  /** Send outbox batches until it is empty; every result removes its seq from the outbox in one transaction with its effects. */
  private async pushAll(): Promise<number> {
    let pushed = 0;
    let jumped = false;
    let size = this.opts.pushBatch ?? 100;
    for (let guard = 0; guard < 10_000; guard++) {
      const batch = await this.store.outbox(size);
      if (batch.length === 0) return pushed;
      const mutations = batch.map((e) => e.mutation);
      try {
        const resp = await this.transport.push({ mutations });
        await this.applyResults(mutations, resp.results, resp.last_seq);
        pushed += resp.results.length;
      } catch (err) {
        if (!(err instanceof ProtocolError)) throw err;
        if ((err.code === "body_too_large" || err.code === "too_many_mutations") && batch.length > 1) {
          size = Math.max(1, Math.floor(batch.length / 2)); // long notes can make 100 mutations exceed the body limit
          continue;
        }
        if (err.code === "seq_gap" && typeof err.details["expected_seq"] === "number") {
          // the server never saw seqs from expected_seq on; our outbox starts later, so renumber it to fill the gap
          await this.store.renumberOutbox(err.details["expected_seq"]);
          continue;
        }
        if (err.code === "seq_reused" && err.details["seq"] === mutations[0]!.seq && !jumped) {
          // Our first seq already holds another body on the server: this outbox was numbered from a fresh start
          // (app data lost, same token). Nothing was applied, so move the whole outbox far ahead; the server's
          // seq_gap answer then tells us the exact next seq (its expected_seq) and we renumber to it.
          jumped = true;
          await this.store.renumberOutbox(mutations[0]!.seq + SEQ_PROBE_JUMP);
          continue;
        }
        if (err.code === "reset_required") {
          await this.store.resetReplica(); // keeps the outbox (SPEC §4): pull a fresh snapshot, then push again
          await this.pullAll();
          continue;
        }
        throw err;
      }
    }
    return pushed;
  }

  private async applyResults(sent: Mutation[], results: MutationResult[], lastSeq: number): Promise<void> {
    const bySeq = new Map(sent.map((m) => [m.seq, m]));
    const replica = new Map((await this.store.tickets()).map((t) => [t.id, t]));
    const upserts = new Map<string, Ticket>();
    const deletes = new Set<string>();
    const outcomes: Outcome[] = [];
    const removed: SyncEvents["removed"][] = [];
    const now = new Date().toISOString();
    for (const r of [...results].sort((a, b) => a.seq - b.seq)) {
      const m = bySeq.get(r.seq);
      if (m === undefined) continue;
      const label = replica.get(m.ticket_id)?.address ?? (m.op === "self_report" ? m.args.address : null);
      if (r.removed !== null) {
        upserts.delete(m.ticket_id);
        deletes.add(m.ticket_id);
        if (replica.has(m.ticket_id)) removed.push({ ticketId: m.ticket_id, reason: r.removed, label });
      } else if (r.ticket !== null) {
        // a replayed result carries the ticket as it was then: never let it overwrite a newer replica copy
        const have = upserts.get(r.ticket.id) ?? replica.get(r.ticket.id);
        if (have === undefined || r.ticket.version >= have.version) {
          deletes.delete(m.ticket_id);
          upserts.set(r.ticket.id, r.ticket);
        }
      }
      if (r.status === "merged" || r.status === "rejected" || r.removed !== null) {
        outcomes.push({ at: now, kind: "result", seq: r.seq, op: m.op, ticketId: m.ticket_id, status: r.status, reason: r.reason,
          message: r.message, removed: r.removed, conflicts: r.conflicts ?? [], label, seen: false });
      }
    }
    await this.store.applyResults({
      doneSeqs: results.map((r) => r.seq).filter((s) => bySeq.has(s)), upserts: [...upserts.values()], deletes: [...deletes],
      outcomes, lastSeq,
    });
    for (const o of outcomes) this.events.emit("outcome", o);
    for (const r of removed) this.events.emit("removed", r);
    await this.refreshCounts();
    this.events.emit("changed", undefined);
  }

  /** Pull page sets until the head; verify the checksum, with at most two full resyncs on mismatch. */
  private async pullAll(): Promise<{ pages: number; resyncs: number; watermark: number | null }> {
    let pages = 0;
    for (let resyncs = 0; ; resyncs++) {
      let meta = await this.store.meta();
      let set: PullResponse[];
      try {
        set = await this.fetchPageSet(meta.cursor);
      } catch (err) {
        if (err instanceof ProtocolError && (err.code === "cursor_invalid" || err.code === "reset_required") && resyncs < 2) {
          await this.store.resetReplica();
          continue;
        }
        throw err;
      }
      pages += set.length;
      await this.applyPageSet(set);
      meta = await this.store.meta();
      const mine = await this.replicaChecksum();
      if (mine === meta.scopeChecksum) return { pages, resyncs, watermark: meta.watermark };
      if (resyncs >= 2) throw new ChecksumError(meta.scopeChecksum ?? "", mine);
      await this.store.resetReplica(); // SPEC §3: on mismatch pull with cursor null
    }
  }

  /** Buffer pages until has_more is false; an error discards them all (the stored cursor is untouched). */
  private async fetchPageSet(cursor: string | null): Promise<PullResponse[]> {
    const pages: PullResponse[] = [];
    let c = cursor;
    for (let i = 0; i < MAX_PAGES; i++) {
      const page = await this.transport.pull({ cursor: c, limit: this.opts.pageLimit ?? 500 });
      pages.push(page);
      c = page.cursor;
      if (!page.has_more) return pages;
    }
    throw new ProtocolError(0, "internal_error", "pull did not finish within the page bound");
  }

  private async applyPageSet(pages: PullResponse[]): Promise<void> {
    const last = pages[pages.length - 1]!;
    const reset = pages.some((p) => p.reset);
    const final = new Map<string, { kind: "upsert"; ticket: Ticket } | { kind: "remove"; reason: RemovalReason }>();
    for (const p of pages) {
      for (const ch of p.changes) {
        if (ch.kind === "upsert") final.set(ch.ticket.id, { kind: "upsert", ticket: ch.ticket });
        else final.set(ch.ticket_id, { kind: "remove", reason: ch.reason });
      }
    }
    const set: PageSet = { upserts: [], removals: [], reset, cursor: last.cursor, watermark: last.watermark, scopeChecksum: last.scope_checksum };
    const outcomes: Outcome[] = [];
    const removed: SyncEvents["removed"][] = [];
    const now = new Date().toISOString();
    for (const [id, ch] of final) {
      if (ch.kind === "upsert") {
        set.upserts.push(ch.ticket);
        continue;
      }
      set.removals.push({ ticketId: id, reason: ch.reason });
      const had = await this.store.ticket(id);
      if (had !== undefined && !reset) {
        const label = had.address;
        removed.push({ ticketId: id, reason: ch.reason, label });
        outcomes.push({ at: now, kind: "removal", seq: null, op: null, ticketId: id, status: null, reason: null, message: null,
          removed: ch.reason, conflicts: [], label, seen: false });
      }
    }
    await this.store.applyPageSet(set, outcomes);
    for (const o of outcomes) this.events.emit("outcome", o);
    for (const r of removed) this.events.emit("removed", r);
    this.events.emit("changed", undefined);
  }

  /** Drop the replica and cursor (never the outbox) and pull a fresh snapshot. */
  async reset(): Promise<SyncReport> {
    await this.store.resetReplica();
    this.events.emit("changed", undefined);
    return this.sync();
  }

  // ------------------------------------------------------------------------------------------------ photos

  /** Upload every queued photo once; returns how many are still waiting. */
  async uploadPhotos(signal?: AbortSignal): Promise<{ remaining: number; retryAfter: number | null }> {
    let retryAfter: number | null = null;
    let remaining = 0;
    for (const rec of await this.store.photos()) {
      if (rec.state !== "queued") continue;
      if (signal?.aborted) { remaining++; continue; }
      this.setState({ photosUploading: true });
      const out = await uploadPhoto(this.store, rec, {
        baseUrl: this.opts.baseUrl, token: this.opts.token, chunkSize: this.opts.uploadChunkSize,
        onProgress: (key, accepted, total) => this.events.emit("photoProgress", { key, accepted, total }),
      }, signal);
      if (out.state === "retry") {
        remaining++;
        if (out.retryAfter !== null) retryAfter = Math.max(retryAfter ?? 0, out.retryAfter);
      }
      if (out.state === "refused") {
        this.events.emit("outcome", { at: new Date().toISOString(), kind: "result", seq: null, op: "attach_photo", ticketId: rec.ticketId,
          status: "rejected", reason: out.error, message: "the server refused this photo", removed: null, conflicts: [], label: null, seen: false });
      }
    }
    this.setState({ photosUploading: false });
    await this.refreshCounts();
    return { remaining, retryAfter };
  }

  private kickPhotos(): void {
    this.photoKick.abort();
  }

  // ------------------------------------------------------------------------------------------------ background

  /** Sync now (or as soon as the running sync ends) instead of waiting for the poll interval. */
  kick(): void {
    this.kicked = true;
    this.kickCtl.abort();
  }

  private async onPoke(watermark: number | null): Promise<void> {
    const meta = await this.store.meta();
    if (watermark === null || meta.watermark === null || watermark > meta.watermark) this.kick();
  }

  /** Run background sync: pushes on every change, pulls on pokes and every poll interval, retries with back-off. */
  run(): void {
    if (this.running) return;
    this.running = true;
    this.live?.start();
    void this.syncLoop();
    this.photoLoop = this.photoLoopRun();
  }

  /** The browser says the network came back: retry right away. */
  networkUp(): void {
    this.live?.nudge();
    this.kick();
    this.kickPhotos();
  }

  async stop(): Promise<void> {
    this.running = false;
    this.live?.stop();
    this.kick();
    this.kickPhotos();
    await this.inFlight?.catch(() => undefined);
    await this.photoLoop;
    this.setState({ phase: "stopped" });
  }

  /** Stop and close the database. */
  async close(): Promise<void> {
    await this.stop();
    this.store.close();
  }

  private async syncLoop(): Promise<void> {
    let attempt = 0;
    while (this.running) {
      this.kicked = false;
      let wait = (this.opts.pollIntervalS ?? 30) * 1000;
      try {
        await this.sync();
        attempt = 0;
      } catch (err) {
        if (err instanceof ProtocolError && FATAL_CODES.has(err.code)) {
          this.running = false; // a human must act (re-enrol, update the app); the outbox stays on disk
          this.live?.stop();
          return;
        }
        const unknown = err instanceof ProtocolError && !err.known;
        if (unknown) this.unknownRetries++;
        if (isRetryable(err) && !(unknown && this.unknownRetries > MAX_UNKNOWN_RETRIES)) {
          wait = backoffDelay(attempt++, this.opts.backoff ?? DEFAULT_BACKOFF, err instanceof ProtocolError ? err.retryAfter : null);
        }
      }
      if (!this.running) break;
      if (this.kicked && attempt === 0) continue;
      this.kickCtl = new AbortController();
      await sleep(wait, this.kickCtl.signal);
    }
  }

  private async photoLoopRun(): Promise<void> {
    let attempt = 0;
    while (this.running) {
      this.photoKick = new AbortController();
      let wait = 60_000;
      try {
        const { remaining, retryAfter } = await this.uploadPhotos();
        if (remaining > 0) wait = backoffDelay(attempt++, this.opts.backoff ?? DEFAULT_BACKOFF, retryAfter);
        else attempt = 0;
      } catch {
        wait = backoffDelay(attempt++, this.opts.backoff ?? DEFAULT_BACKOFF);
      }
      if (!this.running) break;
      await sleep(wait, this.photoKick.signal);
    }
  }
}

function defaultWebSocket(): WebSocketFactory | null {
  const WS = (globalThis as { WebSocket?: new (url: string) => unknown }).WebSocket;
  if (WS === undefined) return null;
  return (url) => new WS(url) as unknown as ReturnType<WebSocketFactory>;
}
