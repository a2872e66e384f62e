/**
 * The live feed for a device (SPEC §3 Live feed): a WebSocket that says "your scope advanced, pull now". Browsers
 * cannot set headers on the upgrade, so the token goes in a first `hello` frame. On every (re)connect the client pulls
 * once, which is how a device resumes: pokes missed while disconnected are covered by that pull.
 */

import { backoffDelay, type BackoffPolicy, DEFAULT_BACKOFF } from "./backoff.js";

/** The part of the WebSocket API this module uses (the browser's WebSocket and Node's `ws` both provide it). */
export interface LiveSocket {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
}

export type WebSocketFactory = (url: string) => LiveSocket;

/** Close codes after which reconnecting cannot help (SPEC/README: 4001 no valid token, 4003 revoked, 4400 bad frame). */
const FATAL_CLOSES = new Set([4001, 4003, 4400]);

export interface LiveOptions {
  baseUrl: string;
  token: string;
  factory: WebSocketFactory;
  onPoke: (watermark: number | null) => void;
  onConnected: (connected: boolean) => void;
  onFatal: (code: number, reason: string) => void;
  backoff?: BackoffPolicy;
}

/** Keeps one live socket open while started, reconnecting with jittered back-off. */
export class LiveConnection {
  private socket: LiveSocket | null = null;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private attempt = 0;
  private running = false;

  constructor(private readonly opts: LiveOptions) {}

  /** ws(s)://host/v1/live?encoding=json from the server's http(s) URL. */
  static url(baseUrl: string): string {
    return `${baseUrl.replace(/\/+$/, "").replace(/^http/, "ws")}/v1/live?encoding=json`;
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    this.connect();
  }

  stop(): void {
    this.running = false;
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    const s = this.socket;
    this.socket = null;
    if (s !== null) {
      s.onclose = null;
      s.close(1000, "client stopping");
    }
  }

  /** Reconnect now (e.g. the browser says the network is back), skipping the back-off wait. */
  nudge(): void {
    if (!this.running || this.socket !== null) return;
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    this.connect();
  }

  private connect(): void {
    let s: LiveSocket;
    try {
      s = this.opts.factory(LiveConnection.url(this.opts.baseUrl));
    } catch {
      this.schedule();
      return;
    }
    this.socket = s;
    s.onopen = () => {
      s.send(JSON.stringify({ type: "hello", token: this.opts.token, encoding: "json" }));
      this.attempt = 0;
      this.opts.onConnected(true);
      this.opts.onPoke(null); // resume: whatever happened while we were away is fetched by one pull
    };
    s.onmessage = (ev) => {
      if (typeof ev.data !== "string") return;
      let msg: { type?: unknown; watermark?: unknown };
      try {
        msg = JSON.parse(ev.data) as { type?: unknown; watermark?: unknown };
      } catch {
        return;
      }
      if (msg.type === "poke") this.opts.onPoke(typeof msg.watermark === "number" ? msg.watermark : null);
      else if (msg.type === "refetch") this.opts.onPoke(null);
    };
    s.onerror = () => undefined; // a close event always follows
    s.onclose = (ev) => {
      if (this.socket === s) this.socket = null;
      this.opts.onConnected(false);
      if (!this.running) return;
      if (FATAL_CLOSES.has(ev.code)) {
        this.running = false;
        this.opts.onFatal(ev.code, ev.reason);
        return;
      }
      this.schedule();
    };
  }

  private schedule(): void {
    const delay = backoffDelay(this.attempt++, this.opts.backoff ?? DEFAULT_BACKOFF);
    this.timer = setTimeout(() => {
      this.timer = null;
      if (this.running) this.connect();
    }, delay);
  }
}
