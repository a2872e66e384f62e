/** Plain-language text for statuses, actions and outcomes: what a crew member reads in the sun, not protocol codes. */

import type { Outcome } from "../../src/store.js";
import type { RemovalReason, TicketStatus } from "../../src/wire.js";

export const STATUS_WORDS: Record<TicketStatus, string> = {
  unassigned: "Not assigned", assigned: "New", acknowledged: "Acknowledged", in_progress: "In progress", paused: "Paused",
  completed: "Completed", unable_to_complete: "Could not complete", closed: "Closed", cancelled: "Cancelled",
  duplicate: "Duplicate", reopened: "Reopened",
};

export const ACTION_WORDS: Record<string, string> = {
  acknowledge: "Acknowledge", start: "Start work", pause: "Pause", resume: "Resume", complete: "Complete",
  unable_to_complete: "Can't complete", decline: "Decline", add_note: "Note", set_items: "Item counts",
  set_resolution: "Resolution", attach_photo: "Photo", self_report: "New job report",
};

const REMOVAL_WORDS: Record<RemovalReason, string> = {
  reassigned: "was moved to another crew",
  cancelled: "was cancelled by the office",
  duplicate: "was marked as a duplicate of another request",
  closed: "was closed by the office",
  declined: "was handed back to the office",
  unassigned: "was taken off your crew's list",
};

const REJECT_WORDS: Record<string, string> = {
  not_in_scope: "the job is no longer on your crew's list",
  ticket_not_found: "the job no longer exists",
  illegal_transition: "the job was not in a state that allows it",
  stale_transition: "the job had already moved on (someone else finished or changed it first)",
  supervisor_owned: "only the office can change that",
  invalid_args: "the office does not accept that code for this kind of job",
  already_exists: "it was already there",
  ticket_closed: "the job is closed",
  unknown_op: "this app version cannot do that on this server",
  photo_pending: "a photo is still uploading",
};

function place(o: Outcome): string {
  return o.label ? `“${o.label}”` : "a job";
}

/** One sentence (or two) telling the crew what happened to their work or to a job. */
export function outcomeText(o: Outcome): string {
  const what = ACTION_WORDS[o.op ?? ""] ?? "Your change";
  if (o.kind === "removal" && o.removed) return `The job at ${place(o)} ${REMOVAL_WORDS[o.removed]}. It is no longer on your list.`;
  if (o.reason === "late_field_report") {
    const why = o.removed ? REMOVAL_WORDS[o.removed] : "left your crew";
    return `Late field report: the job at ${place(o)} ${why} while you were offline. Your ${what.toLowerCase()} was kept and sent to the supervisor for review.`;
  }
  if (o.status === "merged") {
    const c = o.conflicts[0];
    const detail = c ? ` Kept: ${String(c.kept ?? "—")}; not used: ${String(c.discarded ?? "—")}.` : "";
    return `Your ${what.toLowerCase()} on ${place(o)} was combined with another change from your crew.${detail}`;
  }
  if (o.status === "rejected") {
    if (o.op === "attach_photo" && o.seq === null) return `A photo for ${place(o)} could not be uploaded (${o.reason ?? "refused"}).`;
    return `Your ${what.toLowerCase()} on ${place(o)} was not applied: ${REJECT_WORDS[o.reason ?? ""] ?? o.message ?? "the server refused it"}.`;
  }
  if (o.removed) return `The job at ${place(o)} ${REMOVAL_WORDS[o.removed]}.`;
  return o.message ?? `${what} on ${place(o)}: ${o.status ?? "done"}.`;
}
