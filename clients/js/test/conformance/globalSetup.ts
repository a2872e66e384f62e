// Conformance tests need a live FieldSync server. FIELDSYNC_CREDENTIALS names a demo-credentials.json-shaped file of a
// running server (the pytest runner passes one); without it, this starts `fieldsync serve` in a temp dir (embedded
// PostgreSQL, a small demo city) from the repository's .venv and stops it afterwards.
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, chmodSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import type { TestProject } from "vitest/node";

const REPO = resolve(import.meta.dirname, "../../../..");

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const given = process.env["FIELDSYNC_CREDENTIALS"];
  if (given) {
    project.provide("credentials", readFileSync(given, "utf8"));
    return async () => undefined;
  }
  const python = process.env["FIELDSYNC_PYTHON"] ?? join(REPO, ".venv/bin/python");
  if (!existsSync(python)) throw new Error(`no Python at ${python}: run 'bash ops/test.sh --co -q' once or set FIELDSYNC_PYTHON`);
  const dir = mkdtempSync(join(tmpdir(), "fieldsync-js-"));
  chmodSync(dir, 0o755); // as root the embedded cluster runs as `postgres`, which must traverse this dir
  const child: ChildProcess = spawn(python, ["-m", "sync_server.cli", "serve", "--data-dir", join(dir, "data"), "--port", "0"], {
    cwd: REPO, stdio: "ignore", detached: true,
    env: { ...process.env, FIELDSYNC_DEMO_TICKETS: "300", FIELDSYNC_LOG_LEVEL: "warning" },
  });
  const credsPath = join(dir, "data", "demo-credentials.json");
  const deadline = Date.now() + 180_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`fieldsync serve exited with ${child.exitCode}`);
    if (existsSync(credsPath)) {
      try {
        const text = readFileSync(credsPath, "utf8");
        if ((JSON.parse(text) as { server?: string }).server) {
          project.provide("credentials", text);
          break;
        }
      } catch { /* half-written: try again */ }
    }
    if (Date.now() > deadline) throw new Error("fieldsync serve did not start in 180 s");
    await new Promise((r) => setTimeout(r, 300));
  }
  return async () => {
    child.kill("SIGTERM");
    await new Promise((r) => { child.once("exit", r); setTimeout(r, 60_000); });
    rmSync(dir, { recursive: true, force: true });
  };
}

declare module "vitest" {
  export interface ProvidedContext {
    credentials: string;
  }
}
