import { describe, expect, it } from "vitest";
import { allowedActions, buildView, routeOrder } from "../../src/view.js";
import type { Mutation, Ticket } from "../../src/wire.js";

function ticket(id: string, over: Partial<Ticket> = {}): Ticket {
  return {
    id, sr_number: null, service_type: "Bulky Items", department: "Sanitation", status: "assigned", priority: "normal",
    address: `${id} Main St`, zip: null, lat: null, lon: null, council_district: null, description: "", source: null,
    requested_at: "2020-01-01T00:00:00.000000Z", service_date: null, due_at: null, crew: "san-1", notes: [], photos: [],
    items: [], resolution_code: null, reason_code: null, created_by_device: null, updated_at: "2020-01-01T00:00:00.000000Z",
    version: 1, ...over,
  };
}

function mut(seq: number, m: Omit<Mutation, "seq" | "base_version" | "device_time" | "gps">): Mutation {
  return { seq, base_version: 1, device_time: "2020-01-02T10:00:00.000Z", gps: null, ...m } as Mutation;
}

describe("allowedActions", () => {
  it("follows the server's crew transitions", () => {
    expect(allowedActions("assigned")).toEqual(["acknowledge", "start", "complete", "unable_to_complete", "decline"]);
    expect(allowedActions("acknowledged")).toEqual(["start", "complete", "unable_to_complete", "decline"]);
    expect(allowedActions("in_progress")).toEqual(["pause", "complete", "unable_to_complete"]);
    expect(allowedActions("paused")).toEqual(["resume", "complete", "unable_to_complete"]);
    expect(allowedActions("reopened")).toEqual(["acknowledge", "start", "complete", "unable_to_complete", "decline"]);
    expect(allowedActions("completed")).toEqual([]);
    expect(allowedActions("cancelled")).toEqual([]);
  });
});

describe("buildView", () => {
  it("lays pending intents over the replica without touching it", () => {
    const replica = [ticket("a"), ticket("b")];
    const outbox: Mutation[] = [
      mut(1, { op: "acknowledge", ticket_id: "a", args: {} }),
      mut(2, { op: "start", ticket_id: "a", args: {} }),
      mut(3, { op: "add_note", ticket_id: "a", args: { note_id: "n1", text: "loaded" } }),
      mut(4, { op: "attach_photo", ticket_id: "a", args: { sha256: "f".repeat(64), kind: "after", taken_at: "2020-01-02T10:00:00Z" } }),
      mut(5, { op: "complete", ticket_id: "a", args: { resolution_code: "collected", note: null } }),
      mut(6, { op: "decline", ticket_id: "b", args: { reason_code: "wrong_crew", note: null } }),
      mut(7, { op: "self_report", ticket_id: "c", args: { service_type: "Graffiti Removal", address: "700 S Main", lat: 34, lon: -118, resolution_code: "painted_over" } }),
    ];
    const view = buildView(replica, outbox, "me");
    const a = view.find((t) => t.id === "a")!;
    expect(a.status).toBe("completed");
    expect(a.resolution_code).toBe("collected");
    expect(a.notes.map((n) => n.text)).toEqual(["loaded"]);
    expect(a.photos).toHaveLength(1);
    expect(a.photos[0]!.state).toBe("pending");
    expect(a.pendingSeqs).toEqual([1, 2, 3, 4, 5]);
    expect(view.some((t) => t.id === "b")).toBe(false); // declined: leaves the list
    const c = view.find((t) => t.id === "c")!;
    expect(c.localOnly).toBe(true);
    expect(c.status).toBe("completed");
    expect(replica[0]!.status).toBe("assigned");
    expect(replica[0]!.notes).toEqual([]);
  });

  it("never moves a status along a transition the state machine refuses", () => {
    const view = buildView([ticket("a", { status: "completed" })], [mut(1, { op: "start", ticket_id: "a", args: {} })], "me");
    expect(view[0]!.status).toBe("completed");
  });
});

describe("routeOrder", () => {
  it("puts open work first by priority, then walks to the nearest next stop", () => {
    const ts = [
      ticket("done", { status: "completed" }),
      ticket("low", { priority: "low", lat: 34, lon: -118 }),
      ticket("far", { lat: 35, lon: -118 }),
      ticket("near", { lat: 34.001, lon: -118 }),
      ticket("urgent", { priority: "urgent", lat: 34, lon: -118 }),
    ];
    expect(routeOrder(ts, { lat: 34, lon: -118 }).map((t) => t.id)).toEqual(["urgent", "near", "far", "low", "done"]);
  });
});
