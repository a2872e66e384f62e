/**
 * The crew web app: sign in with the device token, work the crew's tickets offline, see what is waiting and what the
 * office did. All sync is the library's (clients/js/src); this file is screens and wording only.
 */

import { SyncClient } from "../../src/client.js";
import type { Outcome } from "../../src/store.js";
import { allowedActions, isWorkable, routeOrder, type TicketView } from "../../src/view.js";
import type { Catalog, ItemLine, PhotoKind } from "../../src/wire.js";
import { h, mount, s } from "./dom.js";
import { ACTION_WORDS, STATUS_WORDS, outcomeText } from "./words.js";
import "./style.css";

const TOKEN_KEY = "fieldsync.token";
const FALLBACK_RESOLUTIONS = ["completed", "collected", "painted_over", "repaired", "not_found"];
const FALLBACK_REASONS = ["access_blocked", "not_found", "needs_equipment", "unsafe", "wrong_address"];

const bar = document.getElementById("bar")!;
const messages = document.getElementById("messages")!;
const main = document.getElementById("main")!;

let client: SyncClient | null = null;
let catalog: Catalog | null = null;
let views: TicketView[] = [];
const previews = new Map<string, string>();

// ------------------------------------------------------------------------------------------------ start-up

async function boot(): Promise<void> {
  if ("serviceWorker" in navigator) {
    navigator.serviceWorker.register("/app/sw.js", { scope: "/app/" }).catch(() => undefined);
  }
  const enrol = /[#&]enrol=([^&]+)/.exec(location.hash);
  if (enrol) {
    localStorage.setItem(TOKEN_KEY, decodeURIComponent(enrol[1]!));
    history.replaceState(null, "", "/app/#/");
  }
  const token = localStorage.getItem(TOKEN_KEY);
  if (!token) return signIn();
  client = await SyncClient.open({ baseUrl: location.origin, token, author: "this phone", gps: () => lastFix });
  client.events.on("state", renderBar);
  client.events.on("changed", () => void refresh());
  client.events.on("outcome", () => void renderMessages());
  window.addEventListener("online", () => client?.networkUp());
  window.addEventListener("offline", () => renderBar());
  window.addEventListener("hashchange", () => void route());
  renderBar();
  await refresh();
  await renderMessages();
  client.run();
  void client.catalog(navigator.onLine).then((c) => {
    catalog = c;
    // a report form opened before the catalog arrived offers free text: give it the list, unless the crew began typing
    const form = document.querySelector("form.self-report");
    const untouched = form !== null && [...form.querySelectorAll<HTMLInputElement | HTMLTextAreaElement>("input, textarea")]
      .every((el) => el.value === "");
    if (untouched && location.hash.startsWith("#/new")) selfReportScreen();
  }).catch(() => undefined);
}

let lastFix: { lat: number; lon: number; accuracy_m: number | null } | null = null;

/** The token from what was pasted or scanned: a bare token, an `/app/#enrol=` link, or the console's
 * `fieldsync:enroll?server=…&device=…&token=…` QR payload. */
export function tokenFrom(raw: string): string {
  const m = /(?:enrol|token)=([^&\s]+)/.exec(raw);
  return decodeURIComponent(m?.[1] ?? raw.trim());
}

function useToken(token: string): void {
  if (!token) return;
  localStorage.setItem(TOKEN_KEY, token);
  location.hash = "#/";
  location.reload();
}

interface Detector { detect(source: HTMLVideoElement): Promise<{ rawValue: string }[]> }

/** Scan the console's enrolment QR code with the camera where the browser has a barcode detector (Chrome on Android). */
async function scan(video: HTMLVideoElement, status: HTMLElement): Promise<void> {
  const Ctor = (window as unknown as { BarcodeDetector?: new (o: { formats: string[] }) => Detector }).BarcodeDetector;
  if (!Ctor) return;
  const stream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: "environment" } });
  video.srcObject = stream;
  video.hidden = false;
  await video.play();
  const detector = new Ctor({ formats: ["qr_code"] });
  status.textContent = "Point the camera at the QR code";
  for (let i = 0; i < 600; i++) {
    const codes = await detector.detect(video).catch(() => []);
    const hit = codes.find((c) => /token=|enrol=/.test(c.rawValue));
    if (hit) {
      stream.getTracks().forEach((t) => t.stop());
      return useToken(tokenFrom(hit.rawValue));
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  stream.getTracks().forEach((t) => t.stop());
  status.textContent = "No code found; paste the token instead";
}

function signIn(error?: string): void {
  mount(bar, h("span", { class: "state" }, "Not signed in"));
  const input = h("textarea", { id: "token", rows: 3, autocomplete: "off", spellcheck: "false", "aria-label": "Device token", placeholder: "Paste the device token or enrolment link" });
  const video = h("video", { class: "scanner", playsinline: true, muted: true, hidden: true });
  const status = h("p", { class: "hint" });
  const canScan = "BarcodeDetector" in window && !!navigator.mediaDevices;
  const form = h("form", { class: "card signin", onsubmit: (ev: Event) => {
    ev.preventDefault();
    useToken(tokenFrom(input.value));
  } },
  h("h1", {}, "Sign in this phone"),
  h("p", {}, "Scan the QR code your supervisor shows in the console with the phone camera, or paste the device token here."),
  error ? h("p", { class: "error" }, error) : null,
  canScan ? h("button", { type: "button", class: "big", onclick: () => void scan(video, status).catch((e: unknown) => { status.textContent = String(e); }) }, "Scan QR code") : null,
  video, status,
  input,
  h("button", { type: "submit", class: "big primary" }, "Sign in"));
  mount(main, form);
}

// ------------------------------------------------------------------------------------------------ status bar and messages

function when(iso: string | null): string {
  if (!iso) return "never";
  return new Date(iso).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

function renderBar(): void {
  if (client === null) return;
  const st = client.state;
  const offline = !navigator.onLine || st.phase === "offline";
  let label = "Up to date";
  if (offline) label = "Offline";
  else if (st.phase === "syncing") label = "Syncing…";
  else if (st.phase === "blocked") label = st.lastError === "upgrade_required" ? "App update needed" : "Signed out: sign in again";
  else if (st.phase === "error") label = `Sync problem (${st.lastError ?? "?"})`;
  mount(bar,
    h("span", { class: `state ${offline ? "off" : st.phase}`, "data-testid": "sync-state" }, label),
    h("span", { "data-testid": "queued" }, st.queued === 0 ? "Nothing waiting" : `${st.queued} change${st.queued === 1 ? "" : "s"} waiting`),
    st.photosPending > 0 ? h("span", { "data-testid": "photos" }, `${st.photosPending} photo${st.photosPending === 1 ? "" : "s"} ${st.photosUploading ? "uploading" : "waiting"}`) : null,
    h("span", { "data-testid": "last-synced" }, `Last synced ${when(st.lastSyncedAt)}`),
    st.phase === "blocked" ? h("button", { class: "small", onclick: () => { localStorage.removeItem(TOKEN_KEY); location.reload(); } }, "Sign in") : null,
  );
}

async function renderMessages(): Promise<void> {
  if (client === null) return;
  const unseen = (await client.outcomes()).filter((o) => !o.seen).slice(-5);
  mount(messages, ...unseen.map((o: Outcome) => h("div", { class: `message ${o.status === "rejected" ? "bad" : "warn"}`, "data-testid": "message" },
    h("p", {}, outcomeText(o)),
    h("button", { class: "small", onclick: async () => { await client!.store.markOutcomesSeen([o.id!]); await renderMessages(); } }, "OK"))));
}

// ------------------------------------------------------------------------------------------------ screens

async function refresh(): Promise<void> {
  if (client === null) return;
  views = await client.tickets();
  renderBar();
  await route(true);
}

let openForm: string | null = null;

async function route(fromRefresh = false): Promise<void> {
  const hash = location.hash || "#/";
  const ticket = /^#\/t\/([0-9a-f-]+)/.exec(hash);
  if (ticket) return ticketScreen(ticket[1]!, fromRefresh);
  openForm = null;
  if (hash.startsWith("#/map")) return mapScreen();
  if (hash.startsWith("#/new")) { if (!fromRefresh) selfReportScreen(); return; }
  return listScreen();
}

function tabs(active: "list" | "map"): HTMLElement {
  return h("nav", { class: "tabs" },
    h("a", { href: "#/", class: active === "list" ? "tab on" : "tab" }, "List"),
    h("a", { href: "#/map", class: active === "map" ? "tab on" : "tab" }, "Map"),
    h("a", { href: "#/new", class: "tab" }, "+ Report job"));
}

function ordered(): TicketView[] {
  return routeOrder(views, lastFix);
}

function listScreen(): void {
  const list = ordered();
  const open = list.filter((t) => isWorkable(t.status));
  mount(main, tabs("list"),
    h("p", { class: "summary" }, `${open.length} open job${open.length === 1 ? "" : "s"} · ${list.length - open.length} done`),
    h("ol", { class: "tickets" }, ...list.map((t, i) => h("li", {},
      h("a", { href: `#/t/${t.id}`, class: `ticket ${isWorkable(t.status) ? "" : "done"}`, "data-ticket": t.id },
        h("span", { class: "stop" }, isWorkable(t.status) ? String(i + 1) : "✓"),
        h("span", { class: "what" }, h("strong", {}, t.address || "(no address)"), h("small", {}, `${t.service_type} · ${t.priority}`)),
        h("span", { class: `badge ${t.status}` }, STATUS_WORDS[t.status]),
        t.pendingSeqs.length > 0 ? h("span", { class: "pending", title: "waiting to sync" }, "⟳") : null)))),
    list.length === 0 ? h("p", { class: "empty" }, "No jobs for your crew right now.") : null);
}

function mapScreen(): void {
  const list = ordered().filter((t) => t.lat !== null && t.lon !== null);
  if (list.length === 0) {
    mount(main, tabs("map"), h("p", { class: "empty" }, "No jobs with a location."));
    return;
  }
  const lats = list.map((t) => t.lat!), lons = list.map((t) => t.lon!);
  const minLat = Math.min(...lats), maxLat = Math.max(...lats), minLon = Math.min(...lons), maxLon = Math.max(...lons);
  const k = Math.cos(((minLat + maxLat) / 2) * Math.PI / 180);
  const w = Math.max((maxLon - minLon) * k, 0.002), hgt = Math.max(maxLat - minLat, 0.002);
  const scale = 1000 / Math.max(w, hgt);
  const x = (lon: number) => 40 + (lon - minLon) * k * scale;
  const y = (lat: number) => 40 + (maxLat - lat) * scale;
  const W = w * scale + 80, H = hgt * scale + 80;
  const path = list.filter((t) => isWorkable(t.status)).map((t) => `${x(t.lon!).toFixed(1)},${y(t.lat!).toFixed(1)}`).join(" ");
  const svg = s("svg", { viewBox: `0 0 ${W.toFixed(0)} ${H.toFixed(0)}`, class: "map", role: "img", "aria-label": "Map of your jobs" },
    s("rect", { x: 0, y: 0, width: W.toFixed(0), height: H.toFixed(0), class: "ground" }),
    path ? s("polyline", { points: path, class: "route" }) : null,
    ...list.map((t, i) => {
      const a = s("a", { href: `#/t/${t.id}` },
        s("circle", { cx: x(t.lon!).toFixed(1), cy: y(t.lat!).toFixed(1), r: 22, class: `dot ${t.status}` }),
        s("text", { x: x(t.lon!).toFixed(1), y: (y(t.lat!) + 8).toFixed(1), "text-anchor": "middle", class: "num" }, isWorkable(t.status) ? String(i + 1) : "✓"));
      return a;
    }));
  mount(main, tabs("map"), svg, h("p", { class: "hint" }, "Numbers follow the route order. Tap a stop to open it. The map works offline (no street tiles)."));
}

function codesFor(serviceType: string, kind: "resolution_codes" | "reason_codes"): string[] {
  const st = catalog?.service_types.find((x) => x.name === serviceType || x.code === serviceType);
  const codes = st?.[kind] ?? [];
  return codes.length > 0 ? codes : kind === "resolution_codes" ? FALLBACK_RESOLUTIONS : FALLBACK_REASONS;
}

function select(name: string, options: string[]): HTMLSelectElement {
  return h("select", { name, required: true, "aria-label": name.replace("_", " ") }, ...options.map((o) => h("option", { value: o }, o.replaceAll("_", " "))));
}

async function ticketScreen(id: string, fromRefresh: boolean): Promise<void> {
  const t = views.find((v) => v.id === id);
  if (t === undefined) {
    mount(main, h("a", { href: "#/", class: "back" }, "← Jobs"), h("p", { class: "empty" }, "This job is no longer on your list."));
    return;
  }
  if (fromRefresh && openForm !== null) {
    const details = document.getElementById("details");
    if (details) { mount(details, ...detailNodes(t)); return; }
  }
  const formBox = h("div", { id: "form" });
  const actions = h("div", { class: "actions" }, ...allowedActions(t.status).map((a) => h("button", {
    class: `big ${a === "complete" || a === "start" || a === "acknowledge" || a === "resume" ? "primary" : ""}`, "data-action": a,
    onclick: () => void act(t, a, formBox),
  }, ACTION_WORDS[a] ?? a)));
  const workable = isWorkable(t.status);
  mount(main,
    h("a", { href: "#/", class: "back" }, "← Jobs"),
    h("section", { id: "details", class: "card" }, ...detailNodes(t)),
    actions,
    formBox,
    workable ? noteForm(t) : null,
    workable ? photoButtons(t) : null);
}

function detailNodes(t: TicketView): Node[] {
  const photos = t.photos.map((p) => {
    const key = `${t.id}:${p.sha256}:${p.kind}`;
    const url = previews.get(key);
    return h("figure", { class: "photo" }, url ? h("img", { src: url, alt: `${p.kind} photo` }) : h("div", { class: "noimg" }, "📷"),
      h("figcaption", {}, `${p.kind} · ${p.state === "available" ? "uploaded" : "waiting"}`));
  });
  void loadPreviews(t);
  return [
    h("h1", {}, t.address || "(no address)"),
    h("p", { class: "meta" }, h("span", { class: `badge ${t.status}`, "data-testid": "status" }, STATUS_WORDS[t.status]), ` ${t.service_type} · priority ${t.priority}`,
      t.sr_number ? ` · SR ${t.sr_number}` : ""),
    t.description ? h("p", {}, t.description) : h("span"),
    t.pendingSeqs.length > 0 ? h("p", { class: "pending-note" }, `${t.pendingSeqs.length} change(s) waiting to sync`) : h("span"),
    t.resolution_code ? h("p", {}, `Resolution: ${t.resolution_code.replaceAll("_", " ")}`) : h("span"),
    t.items.length > 0 ? h("p", {}, `Items: ${t.items.map((i) => `${i.count} × ${i.item_type}`).join(", ")}`) : h("span"),
    h("h2", {}, "Notes"),
    t.notes.length === 0 ? h("p", { class: "empty" }, "No notes yet.") : h("ul", { class: "notes" }, ...t.notes.map((n) => h("li", {}, n.text, h("small", {}, ` — ${n.author}`)))),
    h("h2", {}, "Photos"),
    photos.length === 0 ? h("p", { class: "empty" }, "No photos yet.") : h("div", { class: "photos" }, ...photos),
  ];
}

async function loadPreviews(t: TicketView): Promise<void> {
  if (client === null) return;
  let added = false;
  for (const p of t.photos) {
    const key = `${t.id}:${p.sha256}:${p.kind}`;
    if (previews.has(key)) continue;
    const rec = await client.store.photo(key);
    if (rec?.preview) {
      previews.set(key, URL.createObjectURL(new Blob([rec.preview as BlobPart], { type: "image/jpeg" })));
      added = true;
    }
  }
  if (added && location.hash === `#/t/${t.id}`) {
    const details = document.getElementById("details");
    if (details) mount(details, ...detailNodes(t));
  }
}

function act(t: TicketView, action: string, box: HTMLElement): void {
  const c = client!;
  if (action === "acknowledge") return void c.acknowledge(t.id);
  if (action === "start") return void c.start(t.id);
  if (action === "resume") return void c.resume(t.id);
  openForm = action;
  const note = h("textarea", { name: "note", rows: 2, "aria-label": "Note", placeholder: "Note (optional)" });
  const cancel = h("button", { type: "button", class: "big", onclick: () => { openForm = null; mount(box); } }, "Back");
  if (action === "pause") {
    const reason = h("input", { name: "reason", "aria-label": "Why", placeholder: "Why (optional)" });
    mount(box, h("form", { class: "card", onsubmit: (ev: Event) => { ev.preventDefault(); openForm = null; mount(box); void c.pause(t.id, reason.value.trim() || null); } },
      h("h2", {}, "Pause work"), reason, h("button", { type: "submit", class: "big primary" }, "Pause"), cancel));
    return;
  }
  if (action === "complete") {
    const code = select("resolution_code", codesFor(t.service_type, "resolution_codes"));
    const rows = h("div", { class: "items" });
    const addRow = (type = "", count = "") => rows.append(h("div", { class: "item" },
      h("input", { name: "item_type", "aria-label": "Item", placeholder: "Item (e.g. mattress)", value: type }),
      h("input", { name: "count", type: "number", min: 0, max: 999, inputmode: "numeric", "aria-label": "Count", placeholder: "0", value: count })));
    for (const i of t.items) addRow(i.item_type, String(i.count));
    if (t.items.length === 0) addRow();
    mount(box, h("form", { class: "card", onsubmit: async (ev: Event) => {
      ev.preventDefault();
      const items: ItemLine[] = [];
      for (const row of rows.querySelectorAll(".item")) {
        const type = (row.querySelector("[name=item_type]") as HTMLInputElement).value.trim();
        const count = Number((row.querySelector("[name=count]") as HTMLInputElement).value || "0");
        if (type && Number.isInteger(count) && count >= 0 && !items.some((i) => i.item_type === type)) items.push({ item_type: type, count });
      }
      openForm = null;
      mount(box);
      if (items.length > 0) await c.setItems(t.id, items.slice(0, 10));
      await c.complete(t.id, code.value, note.value.trim() || null);
    } },
    h("h2", {}, "Complete the job"), h("label", {}, "Resolution ", code), h("h3", {}, "Items collected"), rows,
    h("button", { type: "button", class: "small", onclick: () => addRow() }, "+ another item"),
    note, h("button", { type: "submit", class: "big primary", "data-action": "confirm-complete" }, "Complete job"), cancel));
    return;
  }
  const code = select("reason_code", codesFor(t.service_type, "reason_codes"));
  const title = action === "decline" ? "Decline (hand back to the office)" : "Can't complete";
  mount(box, h("form", { class: "card", onsubmit: (ev: Event) => {
    ev.preventDefault();
    openForm = null;
    mount(box);
    const text = note.value.trim() || null;
    void (action === "decline" ? c.decline(t.id, code.value, text) : c.unableToComplete(t.id, code.value, text));
    if (action === "decline") location.hash = "#/";
  } }, h("h2", {}, title), h("label", {}, "Reason ", code), note,
  h("button", { type: "submit", class: "big primary", "data-action": `confirm-${action}` }, title), cancel));
}

function noteForm(t: TicketView): HTMLElement {
  const text = h("textarea", { name: "note-text", rows: 2, "aria-label": "New note", placeholder: "Add a note" });
  return h("form", { class: "card", onsubmit: (ev: Event) => {
    ev.preventDefault();
    const v = text.value.trim();
    if (!v) return;
    text.value = "";
    void client!.addNote(t.id, v.slice(0, 4000));
  } }, text, h("button", { type: "submit", class: "big", "data-action": "add-note" }, "Save note"));
}

/** Downscale for the screen (the original bytes are what gets uploaded). */
async function preview(file: Blob): Promise<Uint8Array | null> {
  try {
    const bmp = await createImageBitmap(file);
    const k = Math.min(1, 320 / Math.max(bmp.width, bmp.height));
    const canvas = document.createElement("canvas");
    canvas.width = Math.max(1, Math.round(bmp.width * k));
    canvas.height = Math.max(1, Math.round(bmp.height * k));
    canvas.getContext("2d")!.drawImage(bmp, 0, 0, canvas.width, canvas.height);
    const blob = await new Promise<Blob | null>((r) => canvas.toBlob(r, "image/jpeg", 0.7));
    return blob ? new Uint8Array(await blob.arrayBuffer()) : null;
  } catch {
    return null;
  }
}

function photoButtons(t: TicketView): HTMLElement {
  const picker = (kind: PhotoKind) => {
    const input = h("input", { type: "file", accept: "image/*", capture: "environment", class: "visually-hidden", "data-photo": kind,
      "aria-label": `${kind} photo` });
    input.addEventListener("change", async () => {
      for (const file of Array.from(input.files ?? [])) {
        const bytes = new Uint8Array(await file.arrayBuffer());
        const small = await preview(file);
        await client!.attachPhoto(t.id, kind, bytes, { mime: file.type || "image/jpeg", preview: small,
          lat: lastFix?.lat ?? null, lon: lastFix?.lon ?? null });
      }
      input.value = "";
    });
    return h("label", { class: "big photo-button" }, kind === "before" ? "📷 Before photo" : "📷 After photo", input);
  };
  return h("div", { class: "actions" }, picker("before"), picker("after"));
}

function selfReportScreen(): void {
  const types = catalog?.service_types.map((x) => x.name) ?? [];
  const type: HTMLSelectElement | HTMLInputElement = types.length > 0 ? select("service_type", types)
    : h("input", { name: "service_type", required: true, "aria-label": "Service type", placeholder: "Service type (e.g. Graffiti Removal)" });
  const codeBox = h("span");
  const refreshCodes = () => mount(codeBox, select("resolution_code", codesFor(type.value, "resolution_codes")));
  type.addEventListener("change", refreshCodes);
  refreshCodes();
  const address = h("input", { name: "address", required: true, "aria-label": "Address", placeholder: "Address" });
  const desc = h("textarea", { name: "description", rows: 2, "aria-label": "What you did", placeholder: "What you found and did" });
  const withCoords = views.filter((v) => v.lat !== null && v.lon !== null);
  const fallback = lastFix ?? (withCoords.length > 0
    ? { lat: withCoords.reduce((a, v) => a + v.lat!, 0) / withCoords.length, lon: withCoords.reduce((a, v) => a + v.lon!, 0) / withCoords.length }
    : { lat: 34.0522, lon: -118.2437 });
  mount(main, tabs("list"), h("form", { class: "card self-report", onsubmit: async (ev: Event) => {
    ev.preventDefault();
    const code = (codeBox.querySelector("select") as HTMLSelectElement).value;
    const m = await client!.selfReport({ service_type: type.value.trim(), address: address.value.trim(), lat: fallback.lat, lon: fallback.lon,
      description: desc.value.trim(), resolution_code: code, note: null });
    location.hash = `#/t/${m.ticket_id}`;
  } }, h("h1", {}, "Report a job you did"), h("p", {}, "For work nobody reported (e.g. graffiti you painted over). It is sent as completed."),
  h("label", {}, "Type ", type), address, desc, h("label", {}, "Resolution ", codeBox),
  h("button", { type: "submit", class: "big primary", "data-action": "self-report" }, "Send report")));
}

if ("geolocation" in navigator && navigator.permissions) {
  void navigator.permissions.query({ name: "geolocation" }).then((p) => {
    if (p.state !== "granted") return;
    navigator.geolocation.watchPosition((pos) => {
      lastFix = { lat: pos.coords.latitude, lon: pos.coords.longitude, accuracy_m: pos.coords.accuracy };
    }, () => undefined, { enableHighAccuracy: false, maximumAge: 60_000 });
  }).catch(() => undefined);
}

void boot().catch((err: unknown) => signIn(err instanceof Error ? err.message : String(err)));
