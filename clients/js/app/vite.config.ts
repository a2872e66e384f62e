// Builds the crew app into the Python package (sync_server/web/app), deterministically: the same sources give the same
// bytes, so CI can rebuild and compare with the committed files.
import { createHash } from "node:crypto";
import { gzipSync } from "node:zlib";
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { defineConfig, type Plugin } from "vite";

const here = import.meta.dirname;

/** Emit sw.js with the list of every built file to precache and a version derived from their contents. */
function serviceWorker(): Plugin {
  return {
    name: "fieldsync-sw",
    apply: "build",
    generateBundle(_options, bundle) {
      const files = Object.keys(bundle).sort();
      const digest = createHash("sha256");
      for (const name of files) {
        const item = bundle[name]!;
        digest.update(name);
        digest.update(item.type === "chunk" ? item.code : typeof item.source === "string" ? item.source : Buffer.from(item.source));
      }
      const precache = ["/app/", "/app/manifest.webmanifest", "/app/icon.svg", ...files.filter((f) => f !== "index.html").map((f) => `/app/${f}`)];
      const source = readFileSync(resolve(here, "sw.template.js"), "utf8")
        .replaceAll("__PRECACHE__", JSON.stringify(precache))
        .replaceAll("__VERSION__", digest.digest("hex").slice(0, 16));
      this.emitFile({ type: "asset", fileName: "sw.js", source });
      // Pre-compressed siblings: the server's FileResponse sends them to clients that accept gzip (a third of the
      // bytes on a slow link). Node's gzip header has no timestamp, so these are deterministic too.
      for (const name of files.filter((f) => /\.(js|css)$/.test(f))) {
        const item = bundle[name]!;
        const raw = item.type === "chunk" ? item.code : item.source;
        this.emitFile({ type: "asset", fileName: `${name}.gz`, source: gzipSync(raw, { level: 9 }) });
      }
    },
  };
}

export default defineConfig({
  root: here,
  base: "/app/",
  publicDir: resolve(here, "public"),
  plugins: [serviceWorker()],
  build: {
    outDir: resolve(here, "../../../sync_server/web/app"),
    emptyOutDir: true,
    target: "es2022",
    modulePreload: { polyfill: false },
    assetsInlineLimit: 0,
    reportCompressedSize: false,
    sourcemap: false,
  },
});
