/** Public API of the FieldSync device library (protocol v1). */

export * from "./wire.js";
export { canonicalBytes, normalizeTicket, pythonFloat, scopeChecksum, sha256Hex, ticketHash, toHex } from "./canonical.js";
export { decodeBody, encodeBody, mediaOf, type Media } from "./codec.js";
export { isRetryable, NetworkError, ProtocolError } from "./errors.js";
export { backoffDelay, DEFAULT_BACKOFF, type BackoffPolicy } from "./backoff.js";
export { Transport, type FetchLike, type TransportOptions } from "./http.js";
export { LiveConnection, type LiveSocket, type WebSocketFactory } from "./live.js";
export { Store, type Meta, type Outcome, type OutboxEntry, type PhotoRecord } from "./store.js";
export { allowedActions, buildView, CREW_TRANSITIONS, isWorkable, routeOrder, type CrewAction, type TicketView } from "./view.js";
export { ChecksumError, SyncClient, type SyncClientOptions, type SyncEvents, type SyncPhase, type SyncReport, type SyncState } from "./client.js";
