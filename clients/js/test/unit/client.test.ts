// SyncClient against a scripted in-memory server: the flows SPEC §3–§5 prescribe (atomic page sets, checksum resync,
// reset keeps the outbox, lost responses resent unchanged, seq_gap). The real server is exercised by test/conformance.
import "fake-indexeddb/auto";
import { beforeEach, describe, expect, it } from "vitest";
import { SyncClient } from "../../src/client.js";
import { scopeChecksum } from "../../src/canonical.js";
import type { Mutation, MutationResult, PullResponse, Ticket } from "../../src/wire.js";

function ticket(id: string, version = 1, over: Partial<Ticket> = {}): Ticket {
  return {
    id, sr_number: null, service_type: "Bulky Items", department: "Sanitation", status: "assigned", priority: "normal",
    address: `${id} Main St`, zip: null, lat: 34.05, lon: -118.25, council_district: null, description: "", source: null,
    requested_at: "2020-01-01T00:00:00.000000Z", service_date: null, due_at: null, crew: "san-1", notes: [], photos: [],
    items: [], resolution_code: null, reason_code: null, created_by_device: null, updated_at: "2020-01-01T00:00:00.000000Z",
    version, ...over,
  };
}

type Handler = (path: string, body: unknown) => Promise<{ status: number; body: unknown; headers?: Record<string, string> }>;

class FakeServer {
  requests: { path: string; body: unknown }[] = [];
  handler: Handler = async () => ({ status: 500, body: {} });
  fetch = async (url: string, init: RequestInit): Promise<Response> => {
    const path = new URL(url).pathname;
    const body = JSON.parse(new TextDecoder().decode(init.body as Uint8Array)) as unknown;
    this.requests.push({ path, body });
    const r = await this.handler(path, body);
    return new Response(JSON.stringify(r.body), { status: r.status, headers: { "Content-Type": "application/json", ...(r.headers ?? {}) } });
  };
}

async function page(tickets: Ticket[], over: Partial<PullResponse> = {}, scope: Ticket[] = tickets): Promise<PullResponse> {
  return {
    changes: tickets.map((t) => ({ kind: "upsert" as const, ticket: t })), cursor: "c1", has_more: false, reset: false,
    scope_checksum: await scopeChecksum(scope), watermark: 10, server_time: "2020-01-02T00:00:00.000000Z", ...over,
  };
}

function applied(m: Mutation, t: Ticket | null = null): MutationResult {
  return { seq: m.seq, status: "applied", reason: null, message: null, ticket: t, removed: null, conflicts: [], server_version: 5, replayed: false };
}

let n = 0;
async function client(server: FakeServer, dbName = `db-${++n}`): Promise<SyncClient> {
  return SyncClient.open({ baseUrl: "http://fake", token: "tok", dbName, media: "application/json", fetch: server.fetch, webSocket: null });
}

describe("SyncClient", () => {
  let server: FakeServer;
  beforeEach(() => {
    server = new FakeServer();
  });

  it("persists gap-free seqs before sending, across a restart", async () => {
    server.handler = async () => { throw new TypeError("no signal"); };
    const c = await client(server, "restart-db");
    await c.acknowledge("a");
    await c.start("a");
    await c.addNote("a", "loaded");
    await expect(c.sync()).rejects.toThrow(/no signal/);
    expect(c.state.phase).toBe("offline");
    c.store.close();
    const again = await client(server, "restart-db");
    const box = await again.store.outbox();
    expect(box.map((e) => [e.seq, e.mutation.op])).toEqual([[1, "acknowledge"], [2, "start"], [3, "add_note"]]);
    expect((await again.store.meta()).nextSeq).toBe(4);
    expect(again.state.queued).toBe(3);
  });

  it("resends the same seqs and bodies after a lost response, and drops them on the replayed results", async () => {
    const c = await client(server);
    await c.acknowledge("a");
    await c.addNote("a", "hello");
    let pushes = 0;
    server.handler = async (path, body) => {
      if (path === "/v1/sync/push") {
        pushes++;
        if (pushes === 1) throw new TypeError("connection reset"); // committed server-side, answer lost
        const ms = (body as { mutations: Mutation[] }).mutations;
        return { status: 200, body: { results: ms.map((m) => ({ ...applied(m), replayed: true })), server_version: 5, last_seq: 2 } };
      }
      return { status: 200, body: await page([]) };
    };
    await expect(c.sync()).rejects.toThrow();
    await c.sync();
    const pushBodies = server.requests.filter((r) => r.path === "/v1/sync/push").map((r) => JSON.stringify(r.body));
    expect(pushBodies).toHaveLength(2);
    expect(pushBodies[0]).toBe(pushBodies[1]);
    expect(await c.store.outboxCount()).toBe(0);
  });

  it("a replayed result's older ticket never overwrites a newer replica copy", async () => {
    const c = await client(server);
    const v5 = ticket("a", 5, { status: "in_progress" });
    server.handler = async () => ({ status: 200, body: await page([v5], { reset: true }) });
    await c.sync();
    await c.acknowledge("a");
    server.handler = async (path, body) => {
      if (path === "/v1/sync/pull") return { status: 200, body: await page([], { cursor: "c2" }, [v5]) };
      const ms = (body as { mutations: Mutation[] }).mutations;
      return { status: 200, body: { results: [{ ...applied(ms[0]!, ticket("a", 3, { status: "acknowledged" })), replayed: true }], server_version: 5, last_seq: 1 } };
    };
    const report = await c.sync();
    expect(report.resyncs).toBe(0);
    expect((await c.replica())[0]!.version).toBe(5);
  });

  it("applies a page set all or nothing: an error on page two leaves replica and cursor untouched", async () => {
    const c = await client(server);
    const a = ticket("a"), b = ticket("b");
    let calls = 0;
    server.handler = async () => {
      calls++;
      if (calls === 1) return { status: 200, body: await page([a], { has_more: true, cursor: "p1" }, [a, b]) };
      if (calls === 2) return { status: 503, body: { error: { code: "service_unavailable", message: "down", details: {} } }, headers: { "Retry-After": "1" } };
      if (calls === 3) return { status: 200, body: await page([a], { has_more: true, cursor: "p1", reset: true }, [a, b]) };
      return { status: 200, body: await page([b], { cursor: "p2", reset: true }, [a, b]) };
    };
    await expect(c.sync()).rejects.toMatchObject({ code: "service_unavailable", retryAfter: 1 });
    expect(await c.replica()).toEqual([]);
    expect((await c.meta()).cursor).toBeNull();
    await c.sync();
    expect((await c.replica()).map((t) => t.id).sort()).toEqual(["a", "b"]);
    expect((await c.meta()).cursor).toBe("p2");
    // the retry restarted from the stored (null) cursor, not from the buffered page's cursor
    expect(server.requests.map((r) => (r.body as { cursor: string | null }).cursor)).toEqual([null, "p1", null, "p1"]);
  });

  it("pulls a fresh snapshot when the checksum does not match the replica", async () => {
    const c = await client(server);
    const a1 = ticket("a", 1), a2 = ticket("a", 2, { status: "acknowledged" });
    let calls = 0;
    server.handler = async (_p, body) => {
      calls++;
      if (calls === 1) return { status: 200, body: await page([a1], { reset: true, cursor: "c1" }) };
      const cursor = (body as { cursor: string | null }).cursor;
      // a delta that forgot the ticket's update: the checksum (of the real scope) cannot match
      if (cursor === "c1") return { status: 200, body: await page([], { cursor: "c2" }, [a2]) };
      return { status: 200, body: await page([a2], { cursor: "c3", reset: true }) };
    };
    await c.sync();
    const report = await c.sync();
    expect(report.resyncs).toBe(1);
    expect((await c.replica())[0]!.version).toBe(2);
    expect(server.requests.map((r) => (r.body as { cursor: string | null }).cursor)).toEqual([null, "c1", null]);
  });

  it("reset_required drops the replica, keeps the outbox and pushes it after the fresh snapshot", async () => {
    const c = await client(server);
    const a = ticket("a");
    server.handler = async () => ({ status: 200, body: await page([a], { reset: true }) });
    await c.sync();
    await c.acknowledge("a");
    const seen: string[] = [];
    const cursors: (string | null)[] = [];
    let reset = false;
    server.handler = async (path, body) => {
      seen.push(path);
      if (path === "/v1/sync/push" && !reset) {
        reset = true;
        return { status: 409, body: { error: { code: "reset_required", message: "reset", details: {} } } };
      }
      if (path === "/v1/sync/push") {
        const ms = (body as { mutations: Mutation[] }).mutations;
        return { status: 200, body: { results: [applied(ms[0]!, { ...a, status: "acknowledged", version: 2 })], server_version: 5, last_seq: 1 } };
      }
      cursors.push((body as { cursor: string | null }).cursor);
      return { status: 200, body: await page([{ ...a, status: "acknowledged", version: 2 }], { reset: true }) };
    };
    await c.sync();
    expect(seen).toEqual(["/v1/sync/push", "/v1/sync/pull", "/v1/sync/push", "/v1/sync/pull"]);
    expect(cursors).toEqual([null, "c1"]); // the stored cursor was dropped by the reset
    expect(await c.store.outboxCount()).toBe(0);
    expect((await c.replica())[0]!.status).toBe("acknowledged");
  });

  it("halves the push batch on body_too_large until it fits", async () => {
    const c = await client(server);
    for (let i = 0; i < 5; i++) await c.addNote("a", `note ${i}`);
    server.handler = async (path, body) => {
      if (path === "/v1/sync/pull") return { status: 200, body: await page([]) };
      const ms = (body as { mutations: Mutation[] }).mutations;
      if (ms.length > 2) return { status: 413, body: { error: { code: "body_too_large", message: "too large", details: {} } } };
      return { status: 200, body: { results: ms.map((m) => applied(m)), server_version: 5, last_seq: ms[ms.length - 1]!.seq } };
    };
    await c.sync();
    const sizes = server.requests.filter((r) => r.path === "/v1/sync/push").map((r) => (r.body as { mutations: Mutation[] }).mutations.length);
    expect(sizes).toEqual([5, 2, 2, 1]); // refused whole, then halves of what was sent
  });

  it("renumbers the outbox from expected_seq on seq_gap", async () => {
    const c = await client(server);
    await c.store.setMeta({ nextSeq: 7 });
    await c.acknowledge("a");
    server.handler = async (path, body) => {
      if (path === "/v1/sync/pull") return { status: 200, body: await page([]) };
      const ms = (body as { mutations: Mutation[] }).mutations;
      if (ms[0]!.seq !== 3) return { status: 409, body: { error: { code: "seq_gap", message: "expected seq 3", details: { expected_seq: 3 } } } };
      return { status: 200, body: { results: [applied(ms[0]!)], server_version: 5, last_seq: 3 } };
    };
    await c.sync();
    const pushed = server.requests.filter((r) => r.path === "/v1/sync/push").map((r) => (r.body as { mutations: Mutation[] }).mutations[0]!.seq);
    expect(pushed).toEqual([7, 3]);
    expect((await c.meta()).nextSeq).toBe(4);
  });

  it("after seq_reused on its first seq (fresh install, old token) finds the server's next seq without applying anything twice", async () => {
    const c = await client(server);
    await c.acknowledge("a");
    await c.start("a");
    const last = 41; // the server already holds seqs 1..41 from this token's previous install
    server.handler = async (path, body) => {
      if (path === "/v1/sync/pull") return { status: 200, body: await page([]) };
      const ms = (body as { mutations: Mutation[] }).mutations;
      const first = ms[0]!.seq;
      if (first <= last) return { status: 409, body: { error: { code: "seq_reused", message: "different body", details: { seq: first, stored_digest: "0".repeat(64) } } } };
      if (first > last + 1) return { status: 409, body: { error: { code: "seq_gap", message: "gap", details: { expected_seq: last + 1 } } } };
      return { status: 200, body: { results: ms.map((m) => applied(m)), server_version: 5, last_seq: last + ms.length } };
    };
    await c.sync();
    const firsts = server.requests.filter((r) => r.path === "/v1/sync/push").map((r) => (r.body as { mutations: Mutation[] }).mutations.map((m) => `${m.seq}:${m.op}`).join(","));
    expect(firsts).toEqual(["1:acknowledge,2:start", `${1 + 2 ** 30}:acknowledge,${2 + 2 ** 30}:start`, "42:acknowledge,43:start"]);
    expect(await c.store.outboxCount()).toBe(0);
    expect((await c.meta()).nextSeq).toBe(44);
  });

  it("reports merged and rejected results and removals as outcomes, and never resends them", async () => {
    const c = await client(server);
    const a = ticket("a");
    server.handler = async () => ({ status: 200, body: await page([a], { reset: true }) });
    await c.sync();
    await c.complete("a", "collected", "done");
    await c.addNote("zzz", "x");
    const outcomes: string[] = [];
    c.events.on("outcome", (o) => outcomes.push(`${o.seq}:${o.status}:${o.reason}:${o.removed}`));
    server.handler = async (path, body) => {
      if (path === "/v1/sync/pull") return { status: 200, body: await page([], { cursor: "c9" }, []) };
      const ms = (body as { mutations: Mutation[] }).mutations;
      return { status: 200, body: { server_version: 6, last_seq: 2, results: [
        { ...applied(ms[0]!), status: "merged", reason: "late_field_report", removed: "reassigned",
          conflicts: [{ kind: "late_field_report", field: "crew", kept: "san-2", discarded: "san-1", detail: null }] },
        { ...applied(ms[1]!), status: "rejected", reason: "ticket_not_found" },
      ] } };
    };
    await c.sync();
    expect(outcomes).toEqual(["1:merged:late_field_report:reassigned", "2:rejected:ticket_not_found:null"]);
    expect(await c.store.outboxCount()).toBe(0);
    expect(await c.replica()).toEqual([]);
    const stored = await c.outcomes();
    expect(stored.map((o) => o.label)).toEqual(["a Main St", null]);
  });

  it("stops on a non-retryable error and keeps the outbox", async () => {
    const c = await client(server);
    await c.acknowledge("a");
    server.handler = async () => ({ status: 401, body: { error: { code: "token_revoked", message: "revoked", details: {} } } });
    await expect(c.sync()).rejects.toMatchObject({ code: "token_revoked", retryable: false });
    expect(c.state.phase).toBe("blocked");
    expect(await c.store.outboxCount()).toBe(1);
  });
});
