// Canonical bytes and checksums must equal the server's byte for byte. The expected values below were produced once
// by the Python implementation (protocol/canonical.py, the other side of the wire) and pasted here by hand.
import { describe, expect, it } from "vitest";
import { canonicalBytes, scopeChecksum, ticketHash, toHex } from "../../src/canonical.js";
import type { Ticket } from "../../src/wire.js";

const TICKET: Ticket = {
  id: "8F0E4B7A-2D1C-4E5F-9A0B-1C2D3E4F5A6B", sr_number: "1-1523590121", service_type: "Bulky Items", department: "Sanitation",
  status: "assigned", priority: "normal", address: "1200 W 7th St, Los Ángeles ☃ 𝄞", zip: "90017", lat: 34, lon: -118.2637,
  council_district: 1, description: "Mattress \"and\" sofa\n\tat the curb \u001f \\ end", source: "Mobile App",
  requested_at: "2020-01-01T15:04:05.000000Z", service_date: "2020-01-02", due_at: null, crew: "SAN-East-3",
  notes: [
    { id: "c0ffee00-0000-4000-8000-000000000002", text: "second", author: "dev-7", device_time: null, created_at: "2020-01-02T10:00:00.000000Z" },
    { id: "c0ffee00-0000-4000-8000-000000000001", text: "first", author: "dev-7", device_time: "2020-01-02T09:00:00.000000Z", created_at: "2020-01-02T09:00:00.000000Z" },
  ],
  photos: [
    { sha256: "b".repeat(64), kind: "after", taken_at: "2020-01-02T09:00:00.000000Z", state: "pending", lat: 1e-5, lon: null },
    { sha256: "a".repeat(64), kind: "before", taken_at: "2020-01-02T09:00:00.000000Z", state: "available", lat: null, lon: 1e16 },
  ],
  items: [{ item_type: "sofa", count: 1 }, { item_type: "mattress", count: 2 }],
  resolution_code: null, reason_code: null, created_by_device: null, updated_at: "2020-01-02T14:00:00.000000Z", version: 3,
};

const EXPECTED = '{"address":"1200 W 7th St, Los Ángeles ☃ 𝄞","council_district":1,"created_by_device":null,"crew":"SAN-East-3","department":"Sanitation","description":"Mattress \\"and\\" sofa\\n\\tat the curb \\u001f \\\\ end","due_at":null,"id":"8f0e4b7a-2d1c-4e5f-9a0b-1c2d3e4f5a6b","items":[{"count":2,"item_type":"mattress"},{"count":1,"item_type":"sofa"}],"lat":34.0,"lon":-118.2637,"notes":[{"author":"dev-7","created_at":"2020-01-02T09:00:00.000000Z","device_time":"2020-01-02T09:00:00.000000Z","id":"c0ffee00-0000-4000-8000-000000000001","text":"first"},{"author":"dev-7","created_at":"2020-01-02T10:00:00.000000Z","device_time":null,"id":"c0ffee00-0000-4000-8000-000000000002","text":"second"}],"photos":[{"kind":"before","lat":null,"lon":1e+16,"sha256":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","state":"available","taken_at":"2020-01-02T09:00:00.000000Z"},{"kind":"after","lat":1e-05,"lon":null,"sha256":"bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb","state":"pending","taken_at":"2020-01-02T09:00:00.000000Z"}],"priority":"normal","reason_code":null,"requested_at":"2020-01-01T15:04:05.000000Z","resolution_code":null,"service_date":"2020-01-02","service_type":"Bulky Items","source":"Mobile App","sr_number":"1-1523590121","status":"assigned","updated_at":"2020-01-02T14:00:00.000000Z","version":3,"zip":"90017"}';

describe("canonical form (SPEC §7)", () => {
  it("renders a ticket exactly as the server does", () => {
    expect(new TextDecoder().decode(canonicalBytes(TICKET))).toBe(EXPECTED);
  });

  it("hashes it to the server's ticket hash", async () => {
    expect(toHex(await ticketHash(TICKET))).toBe("51d8450f1243a6801141bbf519eadead314757783f2646419d842d586cc3337f");
  });

  it("computes the scope checksum of a set, in any order, and of the empty scope", async () => {
    const t2: Ticket = { ...TICKET, version: 4, lat: 34.0522 };
    const want = "43f75574dc784736a4774a100049093c9c1b9d9236f87c164a0689bf71df1c2d";
    expect(await scopeChecksum([TICKET, t2])).toBe(want);
    expect(await scopeChecksum([t2, TICKET])).toBe(want);
    expect(await scopeChecksum([])).toBe("79f5659a634de48b7f33a74afeb233384988be6609957c77a81985f461f0d881");
    // a ticket counted twice must not cancel out (sum, not XOR)
    expect(await scopeChecksum([TICKET, TICKET, t2])).not.toBe(await scopeChecksum([t2]));
  });
});
