"""Viewer speed in headless Chromium (Debian's package, through Playwright), with the Performance
API, on a 32-slice 384x512 series with two artifact types' masks on every slice:

- first image: time from opening the series' page (navigation start, ``performance.timeOrigin``)
  to the first image drawn. Two figures: the viewer's own mark (``performance.now()`` right after
  Cornerstone3D's first render of the stack) and, measured the same way for our viewer and OHIF,
  the first animation frame whose largest canvas has more than 2 % of its pixels lit (an init
  script checks every frame). Each run is a fresh browser context (no cache).
- scroll: frames per second while stepping through the stack slice by slice (the ↓ key, as a
  radiologist does), each step counted when the new slice is rendered, with both overlays on
  and then off, after one warm-up pass (every slice loaded once).
- both Cornerstone3D rendering paths (``?rendering=cpu|gpu``): headless Chromium has no GPU, so
  its WebGL is SwiftShader on the CPU (the viewer itself picks the CPU path there, the GPU path
  on a real GPU). The overlays are the viewer's own 2D canvas, drawn on both paths.
- a breakdown of the first image (Performance API marks: metadata read, Cornerstone3D ready,
  its first render, from which on scroll and the tools work: the first image itself is drawn
  earlier by the viewer's small preview module, at full resolution, while Cornerstone3D loads),
  and with ``--waterfall`` the network waterfall of the last opening (Resource Timing) and the
  long tasks on the main thread before the first image.
- OHIF: when its prebuilt viewer is installed (docs/ohif.md; ``deploy/install-ohif.sh``), the same
  study opened in OHIF in the same run, same browser, same server, first lit frame.

    .venv/bin/python benchmarks/viewer.py [--runs 5] [--passes 2] [--no-ohif] [--waterfall]

Starts its own daphne on a scratch installation (a scratch PostgreSQL database when DATABASE_URL
is set, else embedded SQLite); the frontend must be built (``cd frontend && npm run build``).
Figures print; nothing is asserted. The machine's CPU is shared: expect ±50 %.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest import ROOT, free_port, wait_port
from scoring import scratch, stop

PY = [sys.executable]
PASSWORD = "bench viewer password"
CHROMIUM_ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip

# Records window.__firstLit = performance.now() at the first frame whose largest canvas has more
# than 2 % of its pixels lit (the same rule as tests/browser/test_ohif.py).
FIRST_LIT = """
(() => {
  const check = () => {
    const canvases = [...document.querySelectorAll('canvas')]
      .filter(c => c.width * c.height > 10000);
    if (canvases.length) {
      const source = canvases.sort((a, b) => b.width * b.height - a.width * a.height)[0];
      const copy = document.createElement('canvas');
      copy.width = source.width; copy.height = source.height;
      const ctx = copy.getContext('2d');
      ctx.drawImage(source, 0, 0);
      const data = ctx.getImageData(0, 0, copy.width, copy.height).data;
      let lit = 0;
      for (let i = 0; i < data.length; i += 16) if (data[i] + data[i + 1] + data[i + 2] > 30) lit++;
      if (lit > (data.length / 16) * 0.02) { window.__firstLit = performance.now(); return; }
    }
    requestAnimationFrame(check);
  };
  requestAnimationFrame(check);
})();
"""

# Main-thread tasks over 50 ms, from the start (PerformanceObserver with buffered entries).
LONG_TASKS = """
window.__longTasks = [];
new PerformanceObserver((list) => {
  for (const e of list.getEntries()) window.__longTasks.push([e.startTime, e.duration]);
}).observe({type: 'longtask', buffered: true});
"""

# The requests of an opening up to the first image (Resource Timing), its marks and long tasks.
WATERFALL = r"""() => {
  const first = Number(document.querySelector('#viewer').dataset.firstImageMs);
  const nav = performance.getEntriesByType('navigation')[0];
  const resources = [nav, ...performance.getEntriesByType('resource')]
    .filter((r) => r.startTime <= first + 200)
    .map((r) => ({
      name: r.name.replace(location.origin, '')
        .replace(/studies\/[^/]+\/series\/[^/]+/, 'studies/…/series/…')
        .replace(/instances\/[^/]+/, 'instances/…').slice(0, 90),
      start: r.startTime, end: r.responseEnd, kb: (r.encodedBodySize || 0) / 1024,
    }));
  const marks = performance.getEntriesByType('mark')
    .map((m) => ({name: m.name, start: m.startTime}));
  const long = (window.__longTasks || []).filter(([s]) => s <= first)
    .map(([s, d]) => ({start: s, end: s + d}));
  return {resources, marks, long};
}"""

# Steps through the stack with the ↓ key; a step ends when the slice is on screen and rendered.
SCROLL = """async ({steps, limitMs}) => {
  const root = document.querySelector('#viewer');
  const n = Number(document.querySelector('#slice').max) + 1;
  const press = (key) => window.dispatchEvent(new KeyboardEvent('keydown', {key, bubbles: true}));
  const home = () => new Promise((resolve) => {
    press('Home');
    const wait = () => root.dataset.slice === '0' ? resolve() : requestAnimationFrame(wait);
    wait();
  });
  await home();
  const start = performance.now();
  let done = 0;
  for (let i = 0; i < steps; i++) {
    const target = (i % (n - 1)) + 1;
    if (target === 1 && i > 0) await home();
    const renders = Number(root.dataset.renders);
    press('ArrowDown');
    const shown = await new Promise((resolve) => {
      const t0 = performance.now();
      const wait = () => {
        if (root.dataset.slice === String(target) && Number(root.dataset.renders) > renders) {
          resolve(true);
        } else if (performance.now() - t0 > 10000) {
          resolve(false);  // a slice that never shows: stop and report what was done
        } else requestAnimationFrame(wait);
      };
      wait();
    });
    if (!shown) return {steps: done, ms: performance.now() - start, stalled: target};
    done++;
    if (performance.now() - start > limitMs) break;
  }
  return {steps: done, ms: performance.now() - start};
}"""

SETUP = """
import sys
from backend.accounts.models import Role
from backend.accounts.services import site_create, user_create
from tests.review.helpers import scored_series
site = site_create(name='Bench viewer', slug='bench-viewer')
user_create(username='bench-rad', password=%r, memberships=[(site, Role.RADIOLOGIST)])
series = scored_series(site, slices=32, rows=384, columns=512)
print(series.pk, series.study.study_uid)
"""


def ohif_dir() -> Path:
    return Path(os.environ.get("ARTISCAN_OHIF_DIR", ROOT / "var" / "ohif"))


def sign_in(browser, server: str):  # type: ignore[no-untyped-def]
    context = browser.new_context(viewport={"width": 1920, "height": 1080})
    page = context.new_page()
    page.goto(f"{server}/accounts/login/")
    page.fill("#id_username", "bench-rad")
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{server}/")
    return context, context.storage_state()


def summary(values: list[float]) -> str:
    return (
        f"median {statistics.median(values):.0f} ms (min {min(values):.0f}, "
        f"max {max(values):.0f}, n={len(values)})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="page openings per viewer")
    parser.add_argument("--passes", type=int, default=2, help="scroll passes through the stack")
    parser.add_argument("--no-ohif", action="store_true")
    parser.add_argument(
        "--waterfall", action="store_true",
        help="print the last opening's requests and main-thread long tasks (Performance API)",
    )  # fmt: skip
    parser.add_argument(
        "--modes", nargs="+", choices=["cpu", "gpu"], default=["cpu", "gpu"],
        help="Cornerstone3D rendering (gpu = WebGL, emulated on the CPU in headless Chromium)",
    )  # fmt: skip
    args = parser.parse_args()
    if not (ROOT / "backend" / "static_build" / "app" / "viewer.js").exists():
        sys.exit("Build the frontend first: cd frontend && npm run build")
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright

    with_ohif = not args.no_ohif and (ohif_dir() / "node_modules/@ohif/app/dist").is_dir()
    with scratch("pruned-onnx") as env:
        print("== setting up: a 32-slice 384x512 series with two overlays per slice ==")
        out = subprocess.run(
            [*PY, "manage.py", "shell", "-v0", "-c", SETUP % PASSWORD],
            cwd=ROOT, env=env, check=True, capture_output=True, text=True,
        ).stdout.split()  # fmt: skip
        series_id, study_uid = out[-2], out[-1]
        subprocess.run(
            [*PY, "manage.py", "collectstatic", "--noinput", "-v0"], cwd=ROOT, env=env, check=True
        )
        port = free_port()
        server_env = {**env, "ARTISCAN_OHIF": "true" if with_ohif else "false"}
        log_path = Path(tempfile.gettempdir()) / "artiscan-viewer-bench-daphne.log"
        log = open(log_path, "wb")
        daphne = subprocess.Popen(
            [*PY, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port),
             "backend.config.asgi:application"],
            cwd=ROOT, env=server_env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            wait_port(port, daphne, "daphne")
            server = f"http://127.0.0.1:{port}"
            executable = shutil.which("chromium") or "/usr/bin/chromium"
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
                login, state = sign_in(browser, server)
                login.close()
                figures: dict[str, dict[str, object]] = {}
                waterfalls: dict[str, dict[str, list[dict[str, object]]]] = {}
                stalled: dict[str, int] = {}
                for mode in args.modes:
                    marks: dict[str, list[float]] = {
                        "metadata": [], "init": [], "interactive": [], "lit": []
                    }  # fmt: skip
                    first: list[float] = []
                    scrolls: dict[str, dict[str, float]] = {}
                    for run in tqdm(
                        range(args.runs), desc=f"ArtiScan viewer ({mode})", unit="open"
                    ):
                        context = browser.new_context(
                            viewport={"width": 1920, "height": 1080}, storage_state=state
                        )
                        page = context.new_page()
                        page.add_init_script(FIRST_LIT)
                        page.add_init_script(LONG_TASKS)
                        page.goto(f"{server}/series/{series_id}/?rendering={mode}")
                        try:
                            page.wait_for_selector(
                                "#viewer[data-first-image-ms]", state="attached", timeout=60_000
                            )
                        except PlaywrightTimeout:
                            stalled[mode] = stalled.get(mode, 0) + 1
                            tqdm.write(f"  open {run + 1} ({mode}): no image after 60 s")
                            context.close()
                            continue
                        page.wait_for_function("window.__firstLit !== undefined", timeout=60_000)
                        page.wait_for_selector(
                            "#viewer[data-interactive-ms]", state="attached", timeout=60_000
                        )
                        first.append(float(page.get_attribute("#viewer", "data-first-image-ms")))
                        marks["lit"].append(page.evaluate("window.__firstLit"))
                        for name in ("metadata", "init", "interactive"):
                            marks[name].append(
                                page.evaluate(
                                    f"performance.getEntriesByName('artiscan:{name}')[0].startTime"
                                )
                            )
                        if run == args.runs - 1:
                            if args.waterfall:
                                waterfalls[mode] = page.evaluate(WATERFALL)
                            page.wait_for_selector(
                                "#viewer[data-overlays-loaded='64']", timeout=300_000
                            )
                            n = 31
                            page.evaluate(
                                SCROLL, {"steps": n, "limitMs": 120_000}
                            )  # warm-up: every slice loaded
                            scrolls["on"] = page.evaluate(
                                SCROLL, {"steps": n * args.passes, "limitMs": 120_000}
                            )
                            scrolls["on"]["overlays"] = page.get_attribute(
                                "#viewer", "data-overlays-visible"
                            )
                            page.keyboard.press("o")  # every overlay off
                            page.wait_for_function(
                                "document.querySelector('#viewer').dataset.overlaysVisible === ''"
                            )
                            scrolls["off"] = page.evaluate(
                                SCROLL, {"steps": n * args.passes, "limitMs": 120_000}
                            )
                        context.close()
                    figures[mode] = {"first": first, "marks": marks, "scrolls": scrolls}
                ohif_lit: list[float] = []
                if with_ohif:
                    for _ in tqdm(range(args.runs), desc="OHIF viewer", unit="open"):
                        context = browser.new_context(
                            viewport={"width": 1920, "height": 1080}, storage_state=state
                        )
                        page = context.new_page()
                        page.add_init_script(FIRST_LIT)
                        page.goto(f"{server}/ohif/viewer?StudyInstanceUIDs={study_uid}")
                        page.wait_for_function("window.__firstLit !== undefined", timeout=120_000)
                        ohif_lit.append(page.evaluate("window.__firstLit"))
                        context.close()
                browser.close()
        finally:
            stop([daphne])
            log.close()

    load = os.getloadavg()[0]
    print(f"\n== results (headless Chromium, 1920x1080; load average {load:.1f} on "
          f"{os.cpu_count()} cores) ==")  # fmt: skip
    for mode, f in figures.items():
        marks = f["marks"]
        if stalled.get(mode):
            print(f"  {mode}: {stalled[mode]} opening(s) drew no image within 60 s (not counted;"
                  f" server log {log_path})")  # fmt: skip
        if not f["first"]:
            continue
        print(f"ArtiScan viewer, Cornerstone3D {mode.upper()} rendering:")
        print(f"  open -> series metadata read:     {summary(marks['metadata'])}")
        print(f"  open -> Cornerstone3D initialised: {summary(marks['init'])}")
        print(f"  open -> first image (viewer mark): {summary(f['first'])}")
        print(f"  open -> first lit frame:           {summary(marks['lit'])}")
        print(f"  open -> Cornerstone3D's first render (tools live): "
              f"{summary(marks['interactive'])}")  # fmt: skip
        for key, label in (("on", "overlays on"), ("off", "overlays off")):
            sc = f["scrolls"].get(key)
            if sc:
                fps = sc["steps"] / (sc["ms"] / 1000)
                extra = f" [{sc.get('overlays')}]" if key == "on" else ""
                stall = f", stalled at slice {sc['stalled']}" if "stalled" in sc else ""
                print(f"  scroll, {label}{extra}: {fps:.1f} frames/s "
                      f"({sc['steps']} slice steps in {sc['ms']:.0f} ms{stall})")  # fmt: skip
    for mode, w in waterfalls.items():
        print(f"\nwaterfall of the last {mode.upper()} opening (ms after navigation start):")
        for r in w["resources"]:
            print(f"  {r['start']:7.0f} -> {r['end']:7.0f}  {r['kb']:7.0f} kB  {r['name']}")
        for m in w["marks"]:
            print(f"  {m['start']:7.0f}             mark {m['name']}")
        for t in w["long"]:
            print(f"  {t['start']:7.0f} -> {t['end']:7.0f}  main thread busy (long task)")
    if with_ohif:
        print(f"OHIF {ohif_dir().name}, open -> first lit frame:             {summary(ohif_lit)}")
    else:
        print("OHIF: not installed (bash deploy/install-ohif.sh) or --no-ohif: no comparison")


if __name__ == "__main__":
    main()
