// The supervisor/admin HTTP API as the conformance tests use it: enrol devices, create and move tickets, read results.
import { inject } from "vitest";
import type { Ticket } from "../../src/wire.js";

export interface Credentials {
  server: string;
  admin: { token: string };
  supervisors: { department: string; token: string }[];
  service_types?: Record<string, string>;
}

export function credentials(): Credentials {
  return JSON.parse(inject("credentials")) as Credentials;
}

export class Staff {
  constructor(readonly base: string, readonly token: string) {}

  async call<T>(method: string, path: string, body?: unknown): Promise<T> {
    const resp = await fetch(this.base + path, {
      method, headers: { Authorization: `Bearer ${this.token}`, "Content-Type": "application/json", Accept: "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await resp.text();
    if (!resp.ok) throw new Error(`${method} ${path} → ${resp.status} ${text}`);
    return (text ? JSON.parse(text) : null) as T;
  }

  crews(): Promise<{ crews: { name: string; department: string; active: boolean }[] }> {
    return this.call("GET", "/v1/crews");
  }

  enrol(crew: string, label = "conformance"): Promise<{ device_id: string; token: string; crew: string }> {
    return this.call("POST", "/v1/devices", { crew, label });
  }

  createTicket(serviceType: string, crew: string, address: string): Promise<Ticket> {
    return this.call("POST", "/v1/tickets", { service_type: serviceType, address, crew, lat: 34.05, lon: -118.25, zip: "90012" });
  }

  ticket(id: string): Promise<{ ticket: Ticket; history: { action: string }[] }> {
    return this.call("GET", `/v1/tickets/${id}`);
  }

  assign(id: string, crew: string): Promise<Ticket> {
    return this.call("POST", `/v1/tickets/${id}/assign`, { crew });
  }

  cancel(id: string): Promise<Ticket> {
    return this.call("POST", `/v1/tickets/${id}/cancel`, { reason: "conformance" });
  }

  conflicts(ticketId: string): Promise<{ conflicts: { kind: string; ticket_id: string }[] }> {
    return this.call("GET", `/v1/conflicts?state=all&ticket_id=${ticketId}`);
  }

  photos(ticketId: string): Promise<unknown> {
    return this.call("GET", `/v1/tickets/${ticketId}/photos`);
  }
}

/** A department with two active crews, its supervisor and a service type of that department. */
export async function setting(): Promise<{ creds: Credentials; sup: Staff; crewA: string; crewB: string; serviceType: string }> {
  const creds = credentials();
  const base = creds.server.replace(/\/+$/, "");
  for (const s of creds.supervisors) {
    const sup = new Staff(base, s.token);
    const crews = (await sup.crews()).crews.filter((c) => c.active && c.department === s.department).map((c) => c.name);
    if (crews.length < 2) continue;
    let serviceType = creds.service_types?.[s.department];
    if (serviceType === undefined) {
      const page = await sup.call<{ tickets: Ticket[] }>("GET", "/v1/tickets?limit=1");
      serviceType = page.tickets[0]?.service_type;
    }
    if (serviceType === undefined) continue;
    return { creds, sup, crewA: crews[0]!, crewB: crews[1]!, serviceType };
  }
  throw new Error("the server has no department with two crews and a known service type");
}

/** Resolution codes a crew may use for a service type: from GET /v1/catalog when the server has it, else free text. */
export async function resolutionCodes(base: string, deviceToken: string, serviceType: string): Promise<[string, string]> {
  const resp = await fetch(`${base}/v1/catalog`, { headers: { Authorization: `Bearer ${deviceToken}`, Accept: "application/json" } });
  if (resp.status === 404) return ["collected", "not_found"];
  const cat = (await resp.json()) as { service_types: { name: string; resolution_codes: string[] }[] };
  const codes = cat.service_types.find((s) => s.name === serviceType)?.resolution_codes ?? [];
  if (codes.length === 0) throw new Error(`catalog has no resolution codes for ${serviceType}`);
  return [codes[0]!, codes[1] ?? codes[0]!];
}
