/**
 * What the crew sees: the replica with the outbox's not-yet-acknowledged intents laid over it, and which actions the
 * state machine allows next. The replica itself is never edited locally, so its checksum keeps meaning "the server's
 * view" (I4); this overlay is recomputed from the outbox instead.
 */

import type { Mutation, Ticket, TicketStatus } from "./wire.js";

/** Crew transitions (the server's sync_server/domain/states.py table): op → statuses it may start from. */
export const CREW_TRANSITIONS: Readonly<Record<"acknowledge" | "start" | "pause" | "resume" | "complete" | "unable_to_complete" | "decline",
  { from: readonly TicketStatus[]; to: TicketStatus }>> = {
  acknowledge: { from: ["assigned", "reopened"], to: "acknowledged" },
  start: { from: ["assigned", "acknowledged", "reopened"], to: "in_progress" },
  pause: { from: ["in_progress"], to: "paused" },
  resume: { from: ["paused"], to: "in_progress" },
  complete: { from: ["assigned", "acknowledged", "in_progress", "paused", "reopened"], to: "completed" },
  unable_to_complete: { from: ["assigned", "acknowledged", "in_progress", "paused", "reopened"], to: "unable_to_complete" },
  decline: { from: ["assigned", "acknowledged", "reopened"], to: "unassigned" },
};
export type CrewAction = keyof typeof CREW_TRANSITIONS;

/** The status-changing actions a crew may take on a ticket in this status. */
export function allowedActions(status: TicketStatus): CrewAction[] {
  return (Object.keys(CREW_TRANSITIONS) as CrewAction[]).filter((a) => CREW_TRANSITIONS[a].from.includes(status));
}

/** Whether the crew can still add notes, photos and items (any status its devices hold that is not final). */
export function isWorkable(status: TicketStatus): boolean {
  return ["assigned", "acknowledged", "in_progress", "paused", "reopened"].includes(status);
}

/** A ticket as displayed, with what is still waiting to be sent. */
export interface TicketView extends Ticket {
  /** Seqs in the outbox that touch this ticket. */
  pendingSeqs: number[];
  /** True when the ticket exists only on this device so far (self-report not yet acknowledged). */
  localOnly: boolean;
}

function transition(t: Ticket, op: CrewAction): void {
  const rule = CREW_TRANSITIONS[op];
  if (rule.from.includes(t.status)) t.status = rule.to;
}

/** Lay one outbox mutation over a ticket copy (best effort: the server's answer replaces it soon). */
export function overlay(t: Ticket, m: Mutation, author: string): void {
  switch (m.op) {
    case "acknowledge": case "start": case "pause": case "resume":
      transition(t, m.op);
      break;
    case "complete":
      transition(t, "complete");
      t.resolution_code = m.args.resolution_code;
      if (m.args.note) t.notes = [...t.notes, { id: `local-${m.seq}`, text: m.args.note, author, device_time: m.device_time, created_at: m.device_time }];
      break;
    case "unable_to_complete":
      transition(t, "unable_to_complete");
      t.reason_code = m.args.reason_code;
      if (m.args.note) t.notes = [...t.notes, { id: `local-${m.seq}`, text: m.args.note, author, device_time: m.device_time, created_at: m.device_time }];
      break;
    case "decline":
      transition(t, "decline");
      t.reason_code = m.args.reason_code;
      break;
    case "add_note":
      if (!t.notes.some((n) => n.id === m.args.note_id)) {
        t.notes = [...t.notes, { id: m.args.note_id, text: m.args.text, author, device_time: m.device_time, created_at: m.device_time }];
      }
      break;
    case "set_items": {
      const byType = new Map(t.items.map((i) => [i.item_type, i.count]));
      for (const i of m.args.items) byType.set(i.item_type, i.count);
      t.items = [...byType].map(([item_type, count]) => ({ item_type, count }));
      break;
    }
    case "set_resolution":
      t.resolution_code = m.args.resolution_code;
      break;
    case "attach_photo":
      if (!t.photos.some((p) => p.sha256 === m.args.sha256 && p.kind === m.args.kind)) {
        t.photos = [...t.photos, { sha256: m.args.sha256, kind: m.args.kind, taken_at: m.args.taken_at, state: "pending",
          lat: m.args.lat ?? null, lon: m.args.lon ?? null }];
      }
      break;
    case "self_report":
      break; // handled by selfReportTicket
  }
}

/** The local stand-in for a self-reported ticket until the server's copy arrives. */
export function selfReportTicket(m: Extract<Mutation, { op: "self_report" }>, author: string): Ticket {
  const a = m.args;
  return {
    id: m.ticket_id, sr_number: null, service_type: a.service_type, department: "", status: "completed", priority: "normal",
    address: a.address, zip: a.zip ?? null, lat: a.lat, lon: a.lon, council_district: null, description: a.description ?? "",
    source: "self_report", requested_at: m.device_time, service_date: null, due_at: null, crew: null,
    notes: a.note ? [{ id: `local-${m.seq}`, text: a.note, author, device_time: m.device_time, created_at: m.device_time }] : [],
    photos: [], items: a.items ?? [], resolution_code: a.resolution_code, reason_code: null, created_by_device: author,
    updated_at: m.device_time, version: 0,
  };
}

/** The crew's view: replica tickets with pending intents applied, in outbox (seq) order. */
export function buildView(replica: readonly Ticket[], outbox: readonly Mutation[], author: string): TicketView[] {
  const byId = new Map<string, TicketView>();
  for (const t of replica) byId.set(t.id, { ...structuredClone(t), pendingSeqs: [], localOnly: false });
  for (const m of [...outbox].sort((a, b) => a.seq - b.seq)) {
    let t = byId.get(m.ticket_id);
    if (m.op === "self_report" && t === undefined) {
      t = { ...selfReportTicket(m, author), pendingSeqs: [], localOnly: true };
      byId.set(t.id, t);
    }
    if (t === undefined) continue; // the ticket left scope; its field work is still pushed (SPEC §3)
    overlay(t, m, author);
    t.pendingSeqs.push(m.seq);
  }
  return [...byId.values()].filter((t) => t.status !== "unassigned");
}

const PRIORITY_RANK: Readonly<Record<string, number>> = { urgent: 0, high: 1, normal: 2, low: 3 };

/**
 * Route order: open work first, then by priority, due time, and finally a nearest-neighbour walk from `start` so
 * consecutive stops are close together (the server has no route field in protocol v1).
 */
export function routeOrder<T extends Ticket>(tickets: readonly T[], start: { lat: number; lon: number } | null = null): T[] {
  const open = tickets.filter((t) => isWorkable(t.status));
  const done = tickets.filter((t) => !isWorkable(t.status));
  const groups = new Map<string, T[]>();
  for (const t of open) {
    const key = `${PRIORITY_RANK[t.priority] ?? 9}`;
    groups.set(key, [...(groups.get(key) ?? []), t]);
  }
  const ordered: T[] = [];
  let here = start;
  for (const key of [...groups.keys()].sort()) {
    const rest = [...groups.get(key)!].sort((a, b) => (a.due_at ?? "~").localeCompare(b.due_at ?? "~") || a.id.localeCompare(b.id));
    while (rest.length > 0) {
      let best = 0;
      if (here !== null) {
        let bestD = Infinity;
        rest.forEach((t, i) => {
          const d = t.lat === null || t.lon === null ? Infinity : (t.lat - here!.lat) ** 2 + (t.lon - here!.lon) ** 2;
          if (d < bestD) { bestD = d; best = i; }
        });
      }
      const [next] = rest.splice(best, 1) as [T];
      ordered.push(next);
      if (next.lat !== null && next.lon !== null) here = { lat: next.lat, lon: next.lon };
    }
  }
  return [...ordered, ...done.sort((a, b) => b.updated_at.localeCompare(a.updated_at))];
}
