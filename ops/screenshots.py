"""Render the console's main pages to PNGs for the README (docs/screenshots/), and time the board's first render.

Needs a running server with demo data (`bash ops/serve.sh`) and Debian's Chromium:
    .venv/bin/python ops/screenshots.py [--credentials .fieldsync/demo-credentials.json] [--out docs/screenshots]
Prints one JSON line: the board's transferred bytes and time to first contentful paint.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
from pathlib import Path

from PIL import Image
from playwright.async_api import async_playwright

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--no-first-run", "--disable-sync"]


async def main() -> None:
    """Sign in as the first demo supervisor, then visit and capture each page."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--credentials", default=".fieldsync/demo-credentials.json")
    ap.add_argument("--out", default="docs/screenshots")
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    args = ap.parse_args()
    creds = json.loads(Path(args.credentials).read_text())
    sup = creds["supervisors"][0]
    base = creds["server"].rstrip("/")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="fs-shots-") as profile:
        async with async_playwright() as pw:
            ctx = await pw.chromium.launch_persistent_context(profile, executable_path=args.chromium, headless=True,
                                                              args=ARGS, viewport={"width": 1280, "height": 800})
            page = ctx.pages[0] if ctx.pages else await ctx.new_page()
            await page.goto(base + "/console/login")
            await page.screenshot(path=str(out / "login.png"))
            await page.get_by_label("Username").fill(sup["username"])
            await page.get_by_label("Password").fill(sup["password"])
            await page.get_by_role("button", name="Sign in").click()
            await page.wait_for_url(base + "/console/")
            # Measure a cold board load: bytes over the wire for the document and its subresources, and first paint.
            sizes: list[int] = []

            async def count(resp):  # type: ignore[no-untyped-def]
                try:
                    sizes.append(len(await resp.body()))
                except Exception:  # noqa: BLE001 - a websocket upgrade or aborted response has no body
                    pass

            page.on("response", count)
            await page.goto(base + "/console/?status=unassigned&status=assigned&status=acknowledged&status=in_progress"
                            "&status=paused&status=reopened", wait_until="load")
            fcp = await page.evaluate(
                "new Promise(done => { new PerformanceObserver(list => { for (const e of list.getEntries())"
                " if (e.name === 'first-contentful-paint') done(e.startTime); }).observe({type: 'paint', buffered: true});"
                " setTimeout(() => done(null), 3000); })")
            nav = await page.evaluate("JSON.stringify(performance.getEntriesByType('navigation')[0])")
            page.remove_listener("response", count)
            await page.wait_for_selector("#live-status[data-state=live]")
            await page.screenshot(path=str(out / "board.png"))
            first = await page.locator("#rows tr a").first.get_attribute("href")
            await page.goto(base + str(first))
            await page.screenshot(path=str(out / "ticket.png"))
            await page.goto(base + "/console/conflicts?state=all")
            await page.screenshot(path=str(out / "conflicts.png"))
            await page.goto(base + "/console/crews")
            await page.screenshot(path=str(out / "crews.png"))
            await ctx.close()
    for png in out.glob("*.png"):  # a 64-colour palette keeps the committed images small
        with Image.open(png) as im:
            small = im.convert("RGB").quantize(colors=64)
        small.save(png, optimize=True)
    navd = json.loads(nav)
    print(json.dumps({"board_bytes_decoded": sum(sizes), "board_document_transfer": navd.get("transferSize"),
                      "board_document_decoded": navd.get("decodedBodySize"), "first_contentful_paint_ms": fcp,
                      "response_end_ms": navd.get("responseEnd")}))


if __name__ == "__main__":
    asyncio.run(main())
