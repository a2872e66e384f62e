// FieldSync crew app service worker: the app shell is precached at install, so the app starts with no network at all.
// The build fills in the file list and version below; API requests (/v1/...) are never cached (the library owns sync).
const VERSION = "1041caf660cc1644";
const PRECACHE = ["/app/","/app/manifest.webmanifest","/app/icon.svg","/app/assets/index-BQXfrwPW.css","/app/assets/index-HKcHDv42.js"];
const CACHE = `fieldsync-app-${VERSION}`;

self.addEventListener("install", (event) => {
  event.waitUntil(caches.open(CACHE).then((c) => c.addAll(PRECACHE)).then(() => self.skipWaiting()));
});

self.addEventListener("activate", (event) => {
  event.waitUntil(
    caches.keys()
      .then((keys) => Promise.all(keys.filter((k) => k.startsWith("fieldsync-app-") && k !== CACHE).map((k) => caches.delete(k))))
      .then(() => self.clients.claim()),
  );
});

self.addEventListener("fetch", (event) => {
  const url = new URL(event.request.url);
  if (event.request.method !== "GET" || url.origin !== self.location.origin || !url.pathname.startsWith("/app/")) return;
  // Navigations get the shell (hash routing keeps every screen at /app/); assets are cache-first (their names are hashed).
  const key = event.request.mode === "navigate" ? "/app/" : event.request;
  event.respondWith(
    caches.match(key).then((hit) => hit || fetch(event.request)),
  );
});
