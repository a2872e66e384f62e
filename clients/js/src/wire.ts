/** Protocol v1 wire model (protocol/SPEC.md §2–§3): the shapes a device sends and receives, as TypeScript types. */

export const PROTOCOL_VERSION = 1;
export const VERSION_HEADER = "FieldSync-Protocol";
export const MSGPACK = "application/msgpack";
export const JSON_MEDIA = "application/json";
export const MAX_MUTATIONS = 500;
export const MAX_ITEM_LINES = 10;

export const TICKET_STATUSES = [
  "unassigned", "assigned", "acknowledged", "in_progress", "paused", "completed",
  "unable_to_complete", "closed", "cancelled", "duplicate", "reopened",
] as const;
export type TicketStatus = (typeof TICKET_STATUSES)[number];
export type Priority = "low" | "normal" | "high" | "urgent";
export type PhotoKind = "before" | "after";
export type PhotoState = "pending" | "available";
export type MutationStatus = "applied" | "merged" | "rejected" | "duplicate";
export type RemovalReason = "reassigned" | "cancelled" | "duplicate" | "closed" | "declined" | "unassigned";

/** SPEC §5 reason codes; an unknown one is treated like a rejection (§4), so the type stays open. */
export type ReasonCode =
  | "not_in_scope" | "ticket_not_found" | "illegal_transition" | "stale_transition" | "supervisor_owned"
  | "invalid_args" | "late_field_report" | "already_exists" | "photo_pending" | "ticket_closed" | "unknown_op"
  | "conflict_resolved" | (string & {});

export interface Note {
  id: string;
  text: string;
  author: string;
  device_time: string | null;
  created_at: string;
}

export interface PhotoRef {
  sha256: string;
  kind: PhotoKind;
  taken_at: string;
  state: PhotoState;
  lat: number | null;
  lon: number | null;
}

export interface ItemLine {
  item_type: string;
  count: number;
}

export interface GeoPoint {
  lat: number;
  lon: number;
  accuracy_m?: number | null;
}

export interface Ticket {
  id: string;
  sr_number: string | null;
  service_type: string;
  department: string;
  status: TicketStatus;
  priority: Priority;
  address: string;
  zip: string | null;
  lat: number | null;
  lon: number | null;
  council_district: number | null;
  description: string;
  source: string | null;
  requested_at: string;
  service_date: string | null;
  due_at: string | null;
  crew: string | null;
  notes: Note[];
  photos: PhotoRef[];
  items: ItemLine[];
  resolution_code: string | null;
  reason_code: string | null;
  created_by_device: string | null;
  updated_at: string;
  version: number;
}

export interface TicketUpsert {
  kind: "upsert";
  ticket: Ticket;
}

export interface TicketRemoval {
  kind: "remove";
  ticket_id: string;
  reason: RemovalReason;
}

export type Change = TicketUpsert | TicketRemoval;

export interface PullRequest {
  cursor: string | null;
  limit: number;
}

export interface PullResponse {
  changes: Change[];
  cursor: string;
  has_more: boolean;
  reset: boolean;
  scope_checksum: string;
  watermark: number;
  server_time: string;
}

/** Arguments per op (SPEC §3 Push table). */
export interface OpArgs {
  acknowledge: Record<string, never>;
  start: Record<string, never>;
  pause: { reason: string | null };
  resume: Record<string, never>;
  add_note: { note_id: string; text: string };
  set_items: { items: ItemLine[] };
  set_resolution: { resolution_code: string };
  attach_photo: { sha256: string; kind: PhotoKind; taken_at: string; lat?: number | null; lon?: number | null };
  complete: { resolution_code: string; note: string | null };
  unable_to_complete: { reason_code: string; note: string | null };
  decline: { reason_code: string; note: string | null };
  self_report: {
    service_type: string;
    address: string;
    lat: number;
    lon: number;
    zip?: string | null;
    description?: string;
    resolution_code: string;
    items?: ItemLine[];
    note?: string | null;
  };
}
export type Op = keyof OpArgs;
export const OPS: readonly Op[] = [
  "acknowledge", "start", "pause", "resume", "add_note", "set_items", "set_resolution", "attach_photo",
  "complete", "unable_to_complete", "decline", "self_report",
];

/** One outbox entry as sent on the wire; `seq` is assigned (and persisted) before it is ever sent. */
export type Mutation = {
  [K in Op]: {
    seq: number;
    op: K;
    ticket_id: string;
    args: OpArgs[K];
    base_version: number | null;
    device_time: string;
    gps: GeoPoint | null;
  };
}[Op];

export interface PushRequest {
  mutations: Mutation[];
}

export type Scalar = string | number | boolean | null;

export interface ConflictInfo {
  kind: string;
  field: string | null;
  kept: Scalar;
  discarded: Scalar;
  detail: string | null;
}

export interface MutationResult {
  seq: number;
  status: MutationStatus;
  reason: ReasonCode | null;
  message: string | null;
  ticket: Ticket | null;
  removed: RemovalReason | null;
  conflicts: ConflictInfo[];
  server_version: number;
  replayed: boolean;
}

export interface PushResponse {
  results: MutationResult[];
  server_version: number;
  last_seq: number;
}

export interface ErrorBody {
  code: string;
  message: string;
  details: Record<string, unknown>;
}

export interface ErrorEnvelope {
  error: ErrorBody;
}

/** Live-feed frames a device may receive (SPEC §3 Live feed). */
export type LiveMessage =
  | { type: "poke"; watermark: number }
  | { type: "refetch" }
  | { type: "event"; position: number; event: string; ticket_id: string | null };

/**
 * The error-code table of SPEC §3 Errors: HTTP status and whether a device may retry.
 * Generated by hand from protocol/errors.py; a conformance test compares it with the server's SPEC text.
 */
export const ERROR_CODES: Readonly<Record<string, { status: number; retry: boolean }>> = {
  malformed_body: { status: 400, retry: false },
  validation_failed: { status: 422, retry: false },
  unsupported_media_type: { status: 415, retry: false },
  not_acceptable: { status: 406, retry: false },
  body_too_large: { status: 413, retry: false },
  too_many_mutations: { status: 413, retry: false },
  protocol_version_invalid: { status: 400, retry: false },
  unsupported_version: { status: 400, retry: false },
  upgrade_required: { status: 426, retry: false },
  reset_required: { status: 409, retry: false },
  unauthorized: { status: 401, retry: false },
  token_revoked: { status: 401, retry: false },
  forbidden: { status: 403, retry: false },
  not_found: { status: 404, retry: false },
  method_not_allowed: { status: 405, retry: false },
  cursor_invalid: { status: 400, retry: false },
  seq_gap: { status: 409, retry: false },
  illegal_transition: { status: 409, retry: false },
  conflict: { status: 409, retry: false },
  too_many_uploads: { status: 429, retry: true },
  rate_limited: { status: 429, retry: true },
  service_unavailable: { status: 503, retry: true },
  internal_error: { status: 500, retry: true },
  upload_offset_mismatch: { status: 409, retry: false },
  checksum_mismatch: { status: 460, retry: false },
  upload_too_large: { status: 413, retry: false },
  unsupported_image: { status: 415, retry: false },
  upload_expired: { status: 410, retry: false },
  request_timeout: { status: 408, retry: true },
  // Announced for protocol v1 by concurrent server work; harmless if a server never sends them.
  seq_reused: { status: 409, retry: false },
  upload_busy: { status: 409, retry: true },
  checksum_unsupported: { status: 400, retry: false },
};

/** GET /v1/catalog (when the server offers it): the codes a crew may close each service type with. */
export interface CatalogServiceType {
  code: string;
  name: string;
  department: string;
  default_priority: Priority;
  resolution_codes: string[];
  reason_codes: string[];
}

export interface Catalog {
  department: string | null;
  service_types: CatalogServiceType[];
}
