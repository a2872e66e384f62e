/**
 * The device's durable state in IndexedDB: replica, outbox, cursor, photos and outcome messages.
 * Every multi-record change is one IndexedDB transaction, so an app killed mid-way never leaves half a page set
 * (I7) or a result recorded without its outbox entry removed (I1).
 */

import { type DBSchema, type IDBPDatabase, openDB } from "idb";
import type { ConflictInfo, Mutation, MutationStatus, PhotoKind, ReasonCode, RemovalReason, Ticket } from "./wire.js";

/** An outbox line: the mutation exactly as it will be (re)sent, persisted before the first send (SPEC §5). */
export interface OutboxEntry {
  seq: number;
  mutation: Mutation;
  queuedAt: string;
}

/** A photo waiting for (or done with) its tus upload; bytes live here so a restart resumes instead of losing them. */
export interface PhotoRecord {
  /** `${ticket_id}:${sha256}:${kind}` */
  key: string;
  sha256: string;
  ticketId: string;
  kind: PhotoKind;
  takenAt: string;
  lat: number | null;
  lon: number | null;
  mime: string;
  bytes: Uint8Array;
  /** A small JPEG for the UI, when the app made one. */
  preview: Uint8Array | null;
  /** The tus upload URL once created: a restart resumes here (HEAD, then PATCH from the server's offset). */
  uploadUrl: string | null;
  state: "queued" | "uploaded" | "refused";
  error: string | null;
}

/** What happened to one of the crew's mutations, or to a ticket, kept for the UI until dismissed. */
export interface Outcome {
  id?: number;
  at: string;
  kind: "result" | "removal";
  seq: number | null;
  op: string | null;
  ticketId: string;
  status: MutationStatus | null;
  reason: ReasonCode | null;
  message: string | null;
  removed: RemovalReason | null;
  conflicts: ConflictInfo[];
  /** Short label of the ticket (address) when known, so a message still reads well after the ticket is gone. */
  label: string | null;
  seen: boolean;
}

export interface Meta {
  cursor: string | null;
  nextSeq: number;
  lastSeq: number;
  watermark: number | null;
  scopeChecksum: string | null;
  lastSyncedAt: string | null;
}

interface Schema extends DBSchema {
  tickets: { key: string; value: Ticket };
  outbox: { key: number; value: OutboxEntry };
  photos: { key: string; value: PhotoRecord };
  outcomes: { key: number; value: Outcome };
  meta: { key: string; value: unknown };
}

const DEFAULT_META: Meta = { cursor: null, nextSeq: 1, lastSeq: 0, watermark: null, scopeChecksum: null, lastSyncedAt: null };

/** A page set ready to apply: upserts and removals, plus the cursor and checksum that go with them. */
export interface PageSet {
  upserts: Ticket[];
  removals: { ticketId: string; reason: RemovalReason }[];
  reset: boolean;
  cursor: string;
  watermark: number;
  scopeChecksum: string;
}

/** Effects of a push response, applied in one transaction. */
export interface ResultEffects {
  doneSeqs: number[];
  upserts: Ticket[];
  deletes: string[];
  outcomes: Outcome[];
  lastSeq: number;
}

export class Store {
  private constructor(private readonly db: IDBPDatabase<Schema>) {}

  /** Open (or create) the store; one database per device identity so two sign-ins never mix replicas. */
  static async open(name: string): Promise<Store> {
    const db = await openDB<Schema>(name, 1, {
      upgrade(d) {
        d.createObjectStore("tickets", { keyPath: "id" });
        d.createObjectStore("outbox", { keyPath: "seq" });
        d.createObjectStore("photos", { keyPath: "key" });
        d.createObjectStore("outcomes", { keyPath: "id", autoIncrement: true });
        d.createObjectStore("meta");
      },
    });
    return new Store(db);
  }

  close(): void {
    this.db.close();
  }

  async meta(): Promise<Meta> {
    const tx = this.db.transaction("meta");
    const out: Record<string, unknown> = { ...DEFAULT_META };
    for (const key of Object.keys(DEFAULT_META)) {
      const v = await tx.store.get(key);
      if (v !== undefined) out[key] = v;
    }
    await tx.done;
    return out as unknown as Meta;
  }

  async setMeta(patch: Partial<Meta>): Promise<void> {
    const tx = this.db.transaction("meta", "readwrite");
    for (const [k, v] of Object.entries(patch)) await tx.store.put(v, k);
    await tx.done;
  }

  /** Any extra app value (token, server URL...), kept beside the sync state. */
  async getValue<T>(key: string): Promise<T | undefined> {
    return (await this.db.get("meta", `app:${key}`)) as T | undefined;
  }

  async setValue(key: string, value: unknown): Promise<void> {
    await this.db.put("meta", value, `app:${key}`);
  }

  async tickets(): Promise<Ticket[]> {
    return this.db.getAll("tickets");
  }

  async ticket(id: string): Promise<Ticket | undefined> {
    return this.db.get("tickets", id);
  }

  async outbox(limit?: number): Promise<OutboxEntry[]> {
    return this.db.getAll("outbox", undefined, limit);
  }

  async outboxCount(): Promise<number> {
    return this.db.count("outbox");
  }

  /**
   * Append mutations with the next seqs, and photos with them, in one transaction: the seq counter and the entries
   * are never out of step, so seqs stay gap-free even if the app dies right here.
   */
  async enqueue(make: (seq: number) => Mutation[], photos: PhotoRecord[] = []): Promise<Mutation[]> {
    const tx = this.db.transaction(["meta", "outbox", "photos"], "readwrite");
    const meta = tx.objectStore("meta");
    const next = ((await meta.get("nextSeq")) as number | undefined) ?? 1;
    const muts = make(next);
    const now = new Date().toISOString();
    for (const m of muts) await tx.objectStore("outbox").add({ seq: m.seq, mutation: m, queuedAt: now });
    for (const p of photos) await tx.objectStore("photos").put(p);
    await meta.put(next + muts.length, "nextSeq");
    await tx.done;
    return muts;
  }

  /** Renumber the whole outbox from `first` (after seq_gap / seq_reused: the server never applied these seqs). */
  async renumberOutbox(first: number): Promise<void> {
    const tx = this.db.transaction(["meta", "outbox"], "readwrite");
    const box = tx.objectStore("outbox");
    const entries = await box.getAll();
    await box.clear();
    let seq = first;
    for (const e of entries) {
      await box.add({ ...e, seq, mutation: { ...e.mutation, seq } });
      seq += 1;
    }
    await tx.objectStore("meta").put(seq, "nextSeq");
    await tx.done;
  }

  /** Apply a whole pull page set and its cursor in one transaction (I7). */
  async applyPageSet(set: PageSet, removalOutcomes: Outcome[]): Promise<void> {
    const tx = this.db.transaction(["tickets", "meta", "outcomes"], "readwrite");
    const tickets = tx.objectStore("tickets");
    if (set.reset) await tickets.clear();
    for (const r of set.removals) await tickets.delete(r.ticketId);
    for (const t of set.upserts) await tickets.put(t);
    for (const o of removalOutcomes) await tx.objectStore("outcomes").add(o);
    const meta = tx.objectStore("meta");
    await meta.put(set.cursor, "cursor");
    await meta.put(set.watermark, "watermark");
    await meta.put(set.scopeChecksum, "scopeChecksum");
    await meta.put(new Date().toISOString(), "lastSyncedAt");
    await tx.done;
  }

  /** Drop the replica and the cursor, keeping the outbox, photos and messages (reset_required, checksum mismatch). */
  async resetReplica(): Promise<void> {
    const tx = this.db.transaction(["tickets", "meta"], "readwrite");
    await tx.objectStore("tickets").clear();
    await tx.objectStore("meta").put(null, "cursor");
    await tx.objectStore("meta").put(null, "watermark");
    await tx.done;
  }

  /** Record push results: drop the acknowledged outbox lines and update the replica, all at once (I1). */
  async applyResults(fx: ResultEffects): Promise<void> {
    const tx = this.db.transaction(["tickets", "outbox", "outcomes", "meta"], "readwrite");
    for (const seq of fx.doneSeqs) await tx.objectStore("outbox").delete(seq);
    for (const id of fx.deletes) await tx.objectStore("tickets").delete(id);
    for (const t of fx.upserts) await tx.objectStore("tickets").put(t);
    for (const o of fx.outcomes) await tx.objectStore("outcomes").add(o);
    const meta = tx.objectStore("meta");
    const prev = ((await meta.get("lastSeq")) as number | undefined) ?? 0;
    await meta.put(Math.max(prev, fx.lastSeq), "lastSeq");
    const next = ((await meta.get("nextSeq")) as number | undefined) ?? 1;
    if (next <= fx.lastSeq) await meta.put(fx.lastSeq + 1, "nextSeq");
    await tx.done;
  }

  async photos(): Promise<PhotoRecord[]> {
    return this.db.getAll("photos");
  }

  async photo(key: string): Promise<PhotoRecord | undefined> {
    return this.db.get("photos", key);
  }

  async putPhoto(p: PhotoRecord): Promise<void> {
    await this.db.put("photos", p);
  }

  async outcomes(): Promise<Outcome[]> {
    return this.db.getAll("outcomes");
  }

  async markOutcomesSeen(ids: number[]): Promise<void> {
    const tx = this.db.transaction("outcomes", "readwrite");
    for (const id of ids) {
      const o = await tx.store.get(id);
      if (o) await tx.store.put({ ...o, seen: true });
    }
    await tx.done;
  }
}
