"""``python -m workstation``: watch the scanner's export folder (or send given files) and print
the verdict and advice for every slice.

    python -m workstation --server https://artiscan.hospital.lan --token-file ~/.artiscan-token \\
        watch /data/scanner-export [--stop-below 50]
    python -m workstation --server ... send IM0001 IM0002 ...

The token is a bearer token (``POST /api/auth/token/``). Files go up by STOW-RS; verdicts come
back over the ``/ws/events/`` WebSocket. With ``--stop-below``, a slice whose suitability index
drops below the threshold prints an instruction to stop the sequence (we do not drive scanners).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import requests
from websockets.asyncio.client import connect

BOUNDARY = "artiscan-workstation"


def stow(server: str, token: str, data: bytes, *, timeout: float = 60) -> dict[str, Any]:
    """Send one DICOM file; returns {"status": "stored"|"refused", "sop_uid"|"reason": ...}."""
    body = (
        f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        + data
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )
    response = requests.post(
        f"{server.rstrip('/')}/dicomweb/studies",
        data=body,
        headers={
            "Authorization": f"Bearer {token}",
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={BOUNDARY}',
            "Accept": "application/dicom+json",
        },
        timeout=timeout,
    )
    if response.status_code in (401, 403):
        raise SystemExit(f"the server refused the token ({response.status_code})")
    payload = response.json() if response.content else {}
    stored = payload.get("00081199", {}).get("Value", [])
    if stored:
        return {"status": "stored", "sop_uid": stored[0]["00081155"]["Value"][0]}
    failed = payload.get("00081198", {}).get("Value", [{}])
    reason = failed[0].get("00000902", {}).get("Value", [f"HTTP {response.status_code}"])[0]
    return {"status": "refused", "reason": reason}


def new_files(folder: Path, seen: set[Path], settle_s: float = 0.5) -> list[Path]:
    """Files in ``folder`` (recursively) not seen before and not grown for ``settle_s``."""
    fresh = []
    now = time.time()
    for path in sorted(folder.rglob("*")):
        if path in seen or not path.is_file() or path.name.startswith("."):
            continue
        if now - path.stat().st_mtime < settle_s:
            continue  # the scanner may still be writing it
        seen.add(path)
        fresh.append(path)
    return fresh


async def events(server: str, token: str) -> AsyncIterator[dict[str, Any]]:
    url = server.rstrip("/").replace("http://", "ws://").replace("https://", "wss://")
    async with connect(f"{url}/ws/events/", additional_headers={"Origin": server}) as ws:
        await ws.send(json.dumps({"type": "auth", "token": token}))
        async for message in ws:
            yield json.loads(message)


def verdict_lines(event: dict[str, Any], stop_below: int | None) -> list[str]:
    data = event.get("data", {})
    index = data.get("suitability_index")
    lines = [
        f"slice {data.get('instance_number', '?')}: index {index}/100 - {data.get('reason', '')}"
    ]
    for finding in data.get("findings", []):
        lines.append(f"    {finding['type']}: {finding['advice']}")
    if stop_below is not None and index is not None and index < stop_below:
        lines.append(
            f"    STOP THE SEQUENCE: index {index} is below {stop_below}; correct and repeat."
        )
    return lines


async def run(
    server: str,
    token: str,
    files: Iterable[Path] | None,
    folder: Path | None,
    stop_below: int | None,
) -> int:
    pending: set[str] = set()
    done = 0
    loop = asyncio.get_running_loop()

    async def sender() -> None:
        seen: set[Path] = set()
        while True:
            batch = list(files) if files is not None else new_files(folder or Path("."), seen)
            for path in batch:
                result = await loop.run_in_executor(None, stow, server, token, path.read_bytes())
                if result["status"] == "stored":
                    pending.add(result["sop_uid"])
                    print(f"{path.name}: sent", flush=True)
                else:
                    print(f"{path.name}: refused - {result['reason']}", flush=True)
            if files is not None:
                return
            await asyncio.sleep(0.5)

    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def reader() -> None:
        async for event in events(server, token):
            await queue.put(event)

    listening = asyncio.create_task(reader())
    hello = await asyncio.wait_for(queue.get(), timeout=30)  # subscribed before sending
    if hello.get("kind") != "subscribed":
        raise SystemExit("the server did not accept the token for live events")
    task = asyncio.create_task(sender())
    while True:
        if files is not None and task.done() and done >= len(pending):
            break  # every stored file has its verdict (or nothing was stored)
        if listening.done():
            raise SystemExit("the event connection closed")
        try:
            event = await asyncio.wait_for(queue.get(), timeout=1.0)
        except TimeoutError:
            continue
        if event.get("kind") == "instance.scored" and event["data"].get("sop_uid") in pending:
            for line in verdict_lines(event, stop_below):
                print(line, flush=True)
            done += 1
    listening.cancel()
    task.cancel()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workstation", description=__doc__)
    parser.add_argument("--server", required=True, help="e.g. https://artiscan.hospital.lan")
    parser.add_argument("--token-file", type=Path, required=True)
    parser.add_argument("--stop-below", type=int, default=None, help="suitability index 0-100")
    sub = parser.add_subparsers(dest="command", required=True)
    watch = sub.add_parser("watch", help="send every new file in a folder as it appears")
    watch.add_argument("folder", type=Path)
    send = sub.add_parser("send", help="send these files and wait for their verdicts")
    send.add_argument("files", type=Path, nargs="+")
    args = parser.parse_args(argv)
    token = args.token_file.expanduser().read_text().strip()
    if args.command == "send":
        missing = [str(p) for p in args.files if not p.is_file()]
        if missing:
            print(f"not a file: {', '.join(missing)}", file=sys.stderr)
            return 2
        coro = run(args.server, token, args.files, None, args.stop_below)
    else:
        if not args.folder.is_dir():
            print(f"not a folder: {args.folder}", file=sys.stderr)
            return 2
        coro = run(args.server, token, None, args.folder, args.stop_below)
    try:
        return asyncio.run(coro)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
