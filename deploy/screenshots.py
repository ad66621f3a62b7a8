"""The README's pictures of the worklist, the viewer and the quality dashboard, taken from the
demo itself: what `make demo` shows a newcomer, not a test's fixtures.

    .venv/bin/python deploy/screenshots.py [--out docs/screenshots]

On a scratch installation of the embedded defaults (its own ``ARTISCAN_VAR_DIR``, removed at
the end; nothing of ``var/`` is touched): ``demo_data`` (the demo brain series and the
dashboards' synthetic history), a real Celery worker scoring the series with the shipped model,
``manage.py serve``, and Debian's Chromium driven by Playwright, signed in as the demo
radiologist and the demo site's QA administrator. The viewer opens the demo brain series whose
suitability index is nearest 50 (borderline: what a radiologist is asked to look at), on its
least suitable slice with findings. ``make screenshots`` runs this and the browser tests that
take the annotation and upload pictures.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "screenshots only"  # a scratch installation, removed at the end
USERS = ("radiologist", "siteadmin")
# Debian's Chromium headless, offline and as root (as tests/browser/conftest.py starts it).
CHROMIUM = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"]


def _manage(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True
    )
    if done.returncode:
        raise SystemExit(f"manage.py {args[0]} failed:\n{done.stderr[-2000:]}")
    return done.stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(what: str, ready: Callable[[], Any], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = ready()
        if value:
            return value
        time.sleep(0.5)
    raise SystemExit(f"timed out waiting for {what}")


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _sign_in(page: Any, base: str, username: str) -> None:
    page.goto(f"{base}/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_load_state("networkidle")


def _scored_series(page: Any, base: str) -> list[dict[str, Any]]:
    """The demo site's image series, once every one of them is scored (else empty)."""
    answer = page.request.get(f"{base}/api/series/?modality=MR&limit=50")
    if not answer.ok:
        return []
    body = answer.json()
    series = body["results"] if isinstance(body, dict) else body
    done = [s for s in series if s["status"] == "scored" and s["suitability_index"] is not None]
    return done if series and len(done) == len(series) else []


def shoot(out: Path, base: str) -> None:
    from playwright.sync_api import sync_playwright

    executable = shutil.which("chromium") or "/usr/bin/chromium"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=CHROMIUM)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 800})
            page = context.new_page()
            notes: list[str] = []
            page.on("console", lambda m: notes.append(f"console: {m.text}"))
            page.on("websocket", lambda ws: notes.append(f"websocket: {ws.url}"))
            _sign_in(page, base, "radiologist")
            series = _wait("the demo series to be scored", lambda: _scored_series(page, base), 600)
            print(f"  the {len(series)} newest series scored")
            page.goto(f"{base}/")
            page.wait_for_selector("#worklist .badge", timeout=30_000)
            try:
                page.wait_for_selector("#live[data-state=open]", timeout=30_000)
            except Exception:
                print("\n".join(notes), page.eval_on_selector("#live", "e => e.outerHTML"))
                raise
            page.wait_for_timeout(500)
            page.screenshot(path=str(out / "worklist.png"))
            print(f"  {out / 'worklist.png'}")

            # A borderline series of real images (the demo brains, not the dashboards' history):
            # what a radiologist is asked to look at.
            images = [s for s in series if s["instance_count"] >= 10] or series
            worst = min(images, key=lambda s: abs(s["suitability_index"] - 50))
            page.set_viewport_size({"width": 1920, "height": 1080})
            page.goto(f"{base}/series/{worst['id']}/")
            page.wait_for_selector("#viewer-status[data-state=ready]", timeout=60_000)
            page.wait_for_selector("#strip .strip-cell", timeout=60_000)
            # The least suitable slice among those with findings (else the least suitable one).
            page.evaluate(
                """() => {
                    const cells = [...document.querySelectorAll('#strip .strip-cell')];
                    const score = (c) => [c.querySelectorAll('.strip-dots i').length ? 0 : 1,
                                          Number(c.textContent.replace(/\\D/g, '') || 100)];
                    cells.sort((a, b) => {
                        const [x, y] = [score(a), score(b)];
                        return x[0] - y[0] || x[1] - y[1];
                    });
                    if (cells.length) cells[0].click();
                }"""
            )
            page.wait_for_timeout(1500)
            page.screenshot(path=str(out / "viewer.png"))
            shown = f"{worst['description']}, index {worst['suitability_index']}"
            print(f"  {out / 'viewer.png'}: {shown}")
            context.close()

            context = browser.new_context(viewport={"width": 1280, "height": 800})
            page = context.new_page()
            _sign_in(page, base, "siteadmin")
            page.goto(f"{base}/dashboards/")
            page.wait_for_selector("#dashboard[data-state=ready]", timeout=60_000)
            page.wait_for_timeout(800)
            page.screenshot(path=str(out / "dashboard.png"), full_page=True)
            print(f"  {out / 'dashboard.png'}")
            context.close()
        finally:
            browser.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="artiscan-screenshots-"))
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(ARTISCAN_VAR_DIR=str(work / "var"), PYTHONPATH=str(ROOT))
    processes: list[subprocess.Popen[bytes]] = []
    try:
        print("scratch installation in", work)
        _manage(env, "migrate", "--noinput")
        _manage(env, "collectstatic", "--noinput")
        _manage(env, "demo_data")
        _manage(
            env, "shell", "-c",
            "from django.contrib.auth import get_user_model\n"
            f"for user in get_user_model().objects.filter(username__in={json.dumps(USERS)}):\n"
            f"    user.set_password({PASSWORD!r}); user.save()",
        )  # fmt: skip
        port = _free_port()
        worker = [sys.executable, "-m", "celery", "-A", "backend.config", "worker"]
        worker += ["-Q", "cpu,gpu", "--concurrency", "1", "--loglevel", "WARNING"]
        serve = [sys.executable, "manage.py", "serve", "--port", str(port), "--workers", "1"]
        with open(work / "servers.log", "wb") as log:  # the processes keep their own copies
            for command in (worker, serve):
                processes.append(
                    subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=log)
                )
        _wait("the web server", lambda: _listening(port) or processes[-1].poll() is not None, 60)
        if processes[-1].poll() is not None:
            raise SystemExit(f"serve exited:\n{(work / 'servers.log').read_text()[-2000:]}")
        try:
            shoot(args.out, f"http://127.0.0.1:{port}")
        except BaseException:
            print((work / "servers.log").read_text()[-4000:], file=sys.stderr)
            raise
    finally:
        for proc in processes:
            proc.terminate()
        for proc in processes:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
