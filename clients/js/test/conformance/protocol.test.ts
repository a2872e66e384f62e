// SyncClient against a live FieldSync server (SPEC.md protocol v1): every assertion reads the server through its
// supervisor API or raw protocol requests, never through the client's own idea of what happened.
import "fake-indexeddb/auto";
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { describe, expect, it } from "vitest";
import WebSocket from "ws";
import { canonicalBytes, scopeChecksum, sha256Hex } from "../../src/canonical.js";
import { SyncClient, type SyncClientOptions } from "../../src/client.js";
import { ProtocolError } from "../../src/errors.js";
import { Transport } from "../../src/http.js";
import type { LiveSocket } from "../../src/live.js";
import { ERROR_CODES, type Mutation, type PushResponse, type Ticket } from "../../src/wire.js";
import { pngBytes } from "./png.js";
import { resolutionCodes, setting } from "./staff.js";

let dbs = 0;
async function device(base: string, token: string, over: Partial<SyncClientOptions> = {}): Promise<SyncClient> {
  return SyncClient.open({ baseUrl: base, token, dbName: `conf-${process.pid}-${++dbs}`, webSocket: null, ...over });
}

const wsFactory = (url: string): LiveSocket => new WebSocket(url) as unknown as LiveSocket;

async function until(what: string, check: () => Promise<boolean>, seconds = 20): Promise<void> {
  const deadline = Date.now() + seconds * 1000;
  while (Date.now() < deadline) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out waiting for ${what}`);
}

async function freshCrewSetup(n: number) {
  const s = await setting();
  const base = s.creds.server.replace(/\/+$/, "");
  const tickets: Ticket[] = [];
  for (let i = 0; i < n; i++) tickets.push(await s.sup.createTicket(s.serviceType, s.crewA, `${100 + i} Conformance St ${Date.now()}`));
  return { ...s, base, tickets };
}

describe("protocol v1 conformance", () => {
  it("error table in SPEC.md matches the client's retry table", () => {
    const spec = readFileSync(resolve(import.meta.dirname, "../../../../protocol/SPEC.md"), "utf8");
    const rows = [...spec.matchAll(/^\| `([a-z_]+)` \| (\d{3}) \| (yes|no) \|/gm)].map((m) => [m[1], Number(m[2]), m[3] === "yes"] as const);
    expect(rows.length).toBeGreaterThan(20);
    for (const [code, status, retry] of rows) {
      expect(ERROR_CODES[code!], code).toEqual({ status, retry });
    }
  });

  it("a snapshot pull verifies the scope checksum, identically in msgpack and JSON", async () => {
    const { base, sup, crewA, tickets } = await freshCrewSetup(3);
    const dev = await sup.enrol(crewA);
    const mp = await device(base, dev.token, { media: "application/msgpack", pageLimit: 2 });
    const js = await device(base, dev.token, { media: "application/json" });
    const r1 = await mp.sync();
    const r2 = await js.sync();
    expect(r1.resyncs).toBe(0);
    expect(r2.resyncs).toBe(0);
    const a = await mp.replica();
    const ids = new Set(a.map((t) => t.id));
    for (const t of tickets) expect(ids.has(t.id)).toBe(true);
    expect(a.every((t) => t.crew === crewA)).toBe(true);
    const canon = (ts: Ticket[]) => ts.map((t) => new TextDecoder().decode(canonicalBytes(t))).sort();
    expect(canon(a)).toEqual(canon(await js.replica()));
    expect(await mp.replicaChecksum()).toBe((await mp.meta()).scopeChecksum);
    await mp.close();
    await js.close();
  });

  it("offline work arrives exactly once, replays return stored results, notes and photos are not doubled", async () => {
    const { base, sup, crewA, tickets } = await freshCrewSetup(2);
    const dev = await sup.enrol(crewA);
    const dbName = `conf-offline-${process.pid}`;
    const c = await device(base, dev.token, { dbName });
    await c.sync();
    const [t1, t2] = tickets as [Ticket, Ticket];
    const [res] = await resolutionCodes(base, dev.token, t1.service_type);
    await c.acknowledge(t1.id);
    await c.start(t1.id);
    await c.addNote(t1.id, "two mattresses, loaded");
    await c.setItems(t1.id, [{ item_type: "mattress", count: 2 }]);
    await c.attachPhoto(t1.id, "after", pngBytes(1), { mime: "image/png" });
    await c.complete(t1.id, res, null);
    await c.start(t2.id);
    await c.pause(t2.id, "waiting for truck");
    const sent: Mutation[] = (await c.store.outbox()).map((e) => e.mutation);
    expect(sent.map((m) => m.seq)).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    // the app restarts (same database) and its first push's answer is lost after the server committed it
    c.store.close();
    let dropped = false;
    const replayer = await device(base, dev.token, { dbName, fetch: async (input, init) => {
      const resp = await fetch(input, init);
      if (!dropped && input.endsWith("/v1/sync/push")) { dropped = true; throw new TypeError("signal lost"); }
      return resp;
    } });
    await expect(replayer.sync()).rejects.toThrow(/signal lost/);
    expect(await replayer.store.outboxCount()).toBe(8); // nothing is dropped without a result
    await replayer.sync();
    expect(await replayer.store.outboxCount()).toBe(0);
    const up = await replayer.uploadPhotos();
    expect(up.remaining).toBe(0);
    await replayer.sync();

    const s1 = (await sup.ticket(t1.id)).ticket;
    expect(s1.status).toBe("completed");
    expect(s1.resolution_code).toBe(res);
    expect(s1.notes.filter((n) => n.text === "two mattresses, loaded")).toHaveLength(1);
    expect(s1.items).toEqual([{ item_type: "mattress", count: 2 }]);
    expect(s1.photos).toHaveLength(1);
    expect(s1.photos[0]!.sha256).toBe(await sha256Hex(pngBytes(1)));
    expect(s1.photos[0]!.state).toBe("available");
    expect((await sup.ticket(t2.id)).ticket.status).toBe("paused");

    // a raw resend of the same seqs returns the stored results, marked replayed, and changes nothing
    const raw = new Transport({ baseUrl: base, token: dev.token, media: "application/json" });
    const again: PushResponse = await raw.push({ mutations: sent });
    expect(again.results.map((r) => r.seq)).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    expect(again.results.every((r) => r.replayed)).toBe(true);
    expect(again.results.map((r) => r.status)).toEqual(["applied", "applied", "applied", "applied", "applied", "applied", "applied", "applied"]);
    const after = (await sup.ticket(t1.id)).ticket;
    expect(after.version).toBe(s1.version);
    expect(await replayer.replicaChecksum()).toBe((await replayer.meta()).scopeChecksum);
    await replayer.close();
  });

  it("work on a ticket reassigned while offline comes back as a late field report, and a cancel is a removal", async () => {
    const { base, sup, crewA, crewB, tickets } = await freshCrewSetup(2);
    const dev = await sup.enrol(crewA);
    const c = await device(base, dev.token);
    await c.sync();
    const [t1, t2] = tickets as [Ticket, Ticket];
    await sup.assign(t1.id, crewB);
    await sup.cancel(t2.id);
    const [res] = await resolutionCodes(base, dev.token, t1.service_type);
    await c.complete(t1.id, res, "done before I knew");
    const outcomes: string[] = [];
    const removed: string[] = [];
    c.events.on("outcome", (o) => outcomes.push(`${o.op}:${o.status}:${o.reason}:${o.removed}`));
    c.events.on("removed", (r) => removed.push(`${r.ticketId}:${r.reason}`));
    await c.sync();
    expect(outcomes).toContain("complete:merged:late_field_report:reassigned");
    expect(outcomes).toContain("null:null:null:cancelled");
    expect(removed).toContain(`${t1.id}:reassigned`);
    expect(removed).toContain(`${t2.id}:cancelled`);
    const ids = new Set((await c.replica()).map((t) => t.id));
    expect(ids.has(t1.id) || ids.has(t2.id)).toBe(false);
    expect((await sup.conflicts(t1.id)).conflicts.some((x) => x.kind === "late_field_report")).toBe(true);
    expect(await c.replicaChecksum()).toBe((await c.meta()).scopeChecksum);
    await c.close();
  });

  it("an unknown op is rejected on its own and the next seq still applies (I6)", async () => {
    const { base, sup, crewA, tickets } = await freshCrewSetup(1);
    const dev = await sup.enrol(crewA);
    const raw = new Transport({ baseUrl: base, token: dev.token, media: "application/msgpack" });
    const t = tickets[0]!;
    const now = new Date().toISOString();
    const resp = await raw.push({ mutations: [
      { seq: 1, op: "teleport", ticket_id: t.id, args: {}, base_version: null, device_time: now, gps: null } as unknown as Mutation,
      { seq: 2, op: "acknowledge", ticket_id: t.id, args: {}, base_version: t.version, device_time: now, gps: null },
    ] });
    expect(resp.results.map((r) => [r.seq, r.status, r.reason])).toEqual([[1, "rejected", "unknown_op"], [2, "applied", null]]);
    expect(resp.last_seq).toBe(2);
    await expect(raw.push({ mutations: [{ seq: 5, op: "start", ticket_id: t.id, args: {}, base_version: null, device_time: now, gps: null }] }))
      .rejects.toMatchObject({ code: "seq_gap", status: 409, details: { expected_seq: 3 } });
  });

  it("a newer protocol version is refused with unsupported_version and max_supported", async () => {
    const { base, sup, crewA } = await freshCrewSetup(0);
    const dev = await sup.enrol(crewA);
    const t = new Transport({ baseUrl: base, token: dev.token, fetch: (input, init) =>
      fetch(input, { ...init, headers: { ...(init.headers as Record<string, string>), "FieldSync-Protocol": "99" } }) });
    const err = await t.pull({ cursor: null, limit: 10 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ProtocolError);
    expect(err).toMatchObject({ code: "unsupported_version", status: 400, retryable: false, details: { max_supported: 1 } });
  });

  it("a photo upload cut off mid-way resumes after an app restart at the server's offset", async () => {
    const { base, sup, crewA, tickets } = await freshCrewSetup(1);
    const dev = await sup.enrol(crewA);
    const name = `conf-resume-${process.pid}`;
    const bytes = pngBytes(7, 160); // ~77 KB, several 16 KiB chunks
    const c1 = await device(base, dev.token, { dbName: name, uploadChunkSize: 16 * 1024 });
    await c1.sync();
    await c1.attachPhoto(tickets[0]!.id, "before", bytes, { mime: "image/png" });
    const ctl = new AbortController();
    c1.events.on("photoProgress", (p) => { if (p.accepted >= 16 * 1024) ctl.abort(); });
    const first = await c1.uploadPhotos(ctl.signal);
    expect(first.remaining).toBe(1);
    const [rec] = await c1.store.photos();
    expect(rec!.uploadUrl).not.toBeNull();
    await c1.close();
    const head = await fetch(rec!.uploadUrl!, { method: "HEAD", headers: { Authorization: `Bearer ${dev.token}`, "Tus-Resumable": "1.0.0" } });
    const offset = Number(head.headers.get("Upload-Offset"));
    expect(offset).toBeGreaterThan(0);
    expect(offset).toBeLessThan(bytes.length);

    const c2 = await device(base, dev.token, { dbName: name, uploadChunkSize: 16 * 1024 });
    const acked: number[] = [];
    c2.events.on("photoProgress", (p) => acked.push(p.accepted));
    expect((await c2.uploadPhotos()).remaining).toBe(0);
    expect(acked[0]).toBe(offset + 16 * 1024); // the first chunk after the restart continued from the server's offset
    const [done] = await c2.store.photos();
    expect(done!.state).toBe("uploaded");
    expect(done!.uploadUrl).toBe(rec!.uploadUrl); // same tus session, not a new upload
    await c2.sync();
    const t = (await c2.replica()).find((x) => x.id === tickets[0]!.id)!;
    expect(t.photos.map((p) => [p.sha256, p.state])).toEqual([[await sha256Hex(bytes), "available"]]);
    const got = await fetch(`${base}/v1/photos/${await sha256Hex(bytes)}?variant=original`, { headers: { Authorization: `Bearer ${sup.token}` } });
    expect(got.status).toBe(200);
    expect(await sha256Hex(new Uint8Array(await got.arrayBuffer()))).toBe(await sha256Hex(bytes));
    await c2.close();
  });

  it("a live poke brings a new assignment without polling, and two devices of one crew converge", async () => {
    const { base, sup, crewA, tickets } = await freshCrewSetup(2);
    const d1 = await sup.enrol(crewA, "phone 1");
    const d2 = await sup.enrol(crewA, "phone 2");
    const a = await device(base, d1.token, { webSocket: wsFactory, pollIntervalS: 3600 });
    const b = await device(base, d2.token, { webSocket: wsFactory, pollIntervalS: 3600 });
    await a.sync();
    await b.sync();
    a.run();
    b.run();
    await until("live sockets", async () => a.state.liveConnected && b.state.liveConnected);
    const fresh = await sup.createTicket((tickets[0]!).service_type, crewA, `1 Poke Ave ${Date.now()}`);
    await until("poked pull on both devices", async () =>
      (await a.replica()).some((t) => t.id === fresh.id) && (await b.replica()).some((t) => t.id === fresh.id));
    // concurrent work from both phones on the same tickets
    await a.addNote(tickets[0]!.id, "from phone 1");
    await b.addNote(tickets[0]!.id, "from phone 2");
    const [r1, r2] = await resolutionCodes(base, d1.token, tickets[1]!.service_type);
    await a.setResolution(tickets[1]!.id, r1);
    await b.setResolution(tickets[1]!.id, r2);
    await b.start(tickets[0]!.id);
    await until("outboxes drained", async () => (await a.store.outboxCount()) === 0 && (await b.store.outboxCount()) === 0);
    await a.stop();
    await b.stop();
    await a.sync();
    await b.sync();
    const canon = async (c: SyncClient) => (await c.replica()).map((t) => new TextDecoder().decode(canonicalBytes(t))).sort();
    expect(await canon(a)).toEqual(await canon(b));
    expect(await scopeChecksum(await a.replica())).toBe((await b.meta()).scopeChecksum);
    const notes = (await sup.ticket(tickets[0]!.id)).ticket.notes.map((n) => n.text).sort();
    expect(notes).toEqual(["from phone 1", "from phone 2"]);
    await a.close();
    await b.close();
  });
});
