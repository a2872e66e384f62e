// SPEC.md §9 golden vectors, read from the spec itself: a client that disagrees with any of them can never match the
// server's scope checksum. (The server is checked against the same text by tests/protocol/test_golden_vectors.py.)
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { describe, expect, it } from "vitest";
import { canonicalBytes, canonicalDatetime, scopeChecksum, ticketHash, toHex } from "../../src/canonical.js";
import type { Ticket } from "../../src/wire.js";

const spec = readFileSync(resolve(import.meta.dirname, "../../../../protocol/SPEC.md"), "utf8");
const golden = spec.slice(spec.indexOf("## 9. Golden vectors"));

function vector(name: "A" | "B"): { input: Ticket; canonical: string; hash: string } {
  const part = golden.slice(golden.indexOf(`**Ticket ${name}**`));
  const input = JSON.parse(/```json\n(.*?)\n```/s.exec(part)![1]!) as Ticket;
  const canonical = /```text\n(.*?)\n```/s.exec(part)![1]!;
  const hash = new RegExp(`\`ticket_hash\\(${name}\\)\` = \`([0-9a-f]{64})\``).exec(part)![1]!;
  return { input, canonical, hash };
}

function checksumRow(label: string): string {
  const row = golden.split("\n").find((l) => l.startsWith(`| ${label}`));
  return /`([0-9a-f]{64})`/.exec(row!)![1]!;
}

describe("SPEC §9 golden vectors", () => {
  for (const name of ["A", "B"] as const) {
    it(`ticket ${name}: canonical bytes and hash`, async () => {
      const v = vector(name);
      expect(new TextDecoder().decode(canonicalBytes(v.input))).toBe(v.canonical);
      expect(toHex(await ticketHash(v.input))).toBe(v.hash);
    });
  }

  it("scope checksums", async () => {
    const a = vector("A").input, b = vector("B").input;
    expect(await scopeChecksum([])).toBe(checksumRow("empty"));
    expect(await scopeChecksum([a])).toBe(checksumRow("{A}"));
    expect(await scopeChecksum([a, b])).toBe(checksumRow("{A, B}"));
    expect(await scopeChecksum([b, a])).toBe(checksumRow("{A, B}"));
    expect(await scopeChecksum([a, a])).toBe(checksumRow("A counted twice"));
  });

  it("datetimes with offsets normalise to UTC with microseconds", () => {
    expect(canonicalDatetime("2020-01-01T08:15:00-08:00")).toBe("2020-01-01T16:15:00.000000Z");
    expect(canonicalDatetime("2020-01-02T17:05:00.123456Z")).toBe("2020-01-02T17:05:00.123456Z");
    expect(canonicalDatetime("2019-12-31T23:30:00.5-01:30")).toBe("2020-01-01T01:00:00.500000Z");
    expect(canonicalDatetime("2020-01-01T00:00:00+00:00")).toBe("2020-01-01T00:00:00.000000Z");
  });
});
