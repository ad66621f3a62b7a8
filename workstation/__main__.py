"""``python -m workstation``: watch the scanner's export folder (or send given files) and print
the verdict and advice for every slice.

    python -m workstation --server https://artiscan.hospital.lan --token-file ~/.artiscan-token \\
        watch /data/scanner-export [--stop-below 50]
    python -m workstation --server ... send IM0001 IM0002 ...

The token is a bearer token (``POST /api/auth/token/``). Files go up by STOW-RS; verdicts come
back over the ``/ws/events/`` WebSocket. With ``--stop-below``, a slice whose suitability index
drops below the threshold prints an instruction to stop the sequence (we do not drive scanners).

The files that are waiting go up together: one multipart STOW-RS request carries up to
``--batch`` of them, and up to ``--in-flight`` requests are under way at once; files that appear
meanwhile wait for the next free request. A lone slice is sent as soon as it is complete (its
size and time stamp unchanged over one look at the folder, a tenth of a second).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from pathlib import Path
from typing import Any

import requests
from websockets.asyncio.client import connect

BOUNDARY = "artiscan-workstation"
POLL_S = 0.1
"""How often the watched folder is looked at (and a file's completeness checked)."""
EARLY_KEPT = 10_000
"""Verdicts of other slices kept in case their request's answer is still on its way."""


MAX_REQUEST_BYTES = 48 * 1024 * 1024
"""Below the server's default request limit (``ARTISCAN_MAX_REQUEST_MB``, 64)."""


def _post(server: str, token: str, blobs: Sequence[bytes], timeout: float) -> requests.Response:
    body = b"".join(
        f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode() + data + b"\r\n"
        for data in blobs
    )
    return requests.post(
        f"{server.rstrip('/')}/dicomweb/studies",
        data=body + f"--{BOUNDARY}--\r\n".encode(),
        headers={
            "Authorization": f"Bearer {token}",
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={BOUNDARY}',
            "Accept": "application/dicom+json",
        },
        timeout=timeout,
    )


def _failure_reasons(payload: dict[str, Any], status_code: int) -> list[str]:
    failed = payload.get("00081198", {}).get("Value", [])
    return [
        item.get("00000902", {}).get("Value", [f"HTTP {status_code}"])[0] for item in failed
    ] or [f"HTTP {status_code}"]


def stow_many(
    server: str, token: str, blobs: Sequence[bytes], *, timeout: float = 120
) -> list[dict[str, Any]]:
    """Send DICOM files in one STOW-RS request; one result per file, in order:
    ``{"status": "stored", "sop_uid": ...}`` or ``{"status": "refused", "reason": ...}``.

    The answer lists the stored files (in order) apart from the refused ones, and the stored
    UIDs are the server's de-identified ones: when some were refused, which file is which cannot
    be told, so that batch is sent again file by file (storing is idempotent: a file already
    stored is answered as stored again, and is not scored twice).
    """
    if not blobs:
        return []
    response = _post(server, token, blobs, timeout)
    if response.status_code in (401, 403):
        raise SystemExit(f"the server refused the token ({response.status_code})")
    payload = response.json() if response.content else {}
    stored = payload.get("00081199", {}).get("Value", [])
    if len(stored) == len(blobs):
        return [{"status": "stored", "sop_uid": item["00081155"]["Value"][0]} for item in stored]
    if len(blobs) > 1:
        return [stow_many(server, token, [data], timeout=timeout)[0] for data in blobs]
    if stored:
        return [{"status": "stored", "sop_uid": stored[0]["00081155"]["Value"][0]}]
    return [{"status": "refused", "reason": _failure_reasons(payload, response.status_code)[0]}]


def stow(server: str, token: str, data: bytes, *, timeout: float = 60) -> dict[str, Any]:
    """Send one DICOM file; returns {"status": "stored"|"refused", "sop_uid"|"reason": ...}."""
    return stow_many(server, token, [data], timeout=timeout)[0]


def take_batch(
    waiting: list[Path], sizes: dict[Path, int], max_files: int, max_bytes: int = MAX_REQUEST_BYTES
) -> list[Path]:
    """Remove and return the files of the next request from the front of ``waiting``: at most
    ``max_files`` and ``max_bytes`` together, and always at least one."""
    batch: list[Path] = []
    total = 0
    while waiting and len(batch) < max_files:
        size = sizes.get(waiting[0], 0)
        if batch and total + size > max_bytes:
            break
        batch.append(waiting.pop(0))
        total += size
    return batch


def new_files(
    folder: Path,
    seen: set[Path],
    settle_s: float = 2.0,
    last: dict[Path, tuple[int, int]] | None = None,
) -> list[Path]:
    """Files in ``folder`` (recursively) not seen before and complete: unchanged (size and
    modification time) since the previous look recorded in ``last``, or untouched for
    ``settle_s``. Without ``last`` only the second rule applies."""
    fresh = []
    now = time.time()
    current: dict[Path, tuple[int, int]] = {}
    for path in sorted(folder.rglob("*")):
        if path in seen or not path.is_file() or path.name.startswith("."):
            continue
        stat = path.stat()
        current[path] = (stat.st_size, stat.st_mtime_ns)
        steady = last is not None and last.get(path) == current[path]
        if not steady and now - stat.st_mtime < settle_s:
            continue  # the scanner may still be writing it
        seen.add(path)
        fresh.append(path)
    if last is not None:
        last.clear()
        last.update({p: v for p, v in current.items() if p not in seen})
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
    *,
    max_files: int = 8,
    in_flight: int = 2,
) -> int:
    pending: set[str] = set()
    shown: set[str] = set()
    early: dict[str, dict[str, Any]] = {}
    loop = asyncio.get_running_loop()

    def show(event: dict[str, Any]) -> None:
        sop = event["data"]["sop_uid"]
        if sop in shown:
            return
        shown.add(sop)
        for line in verdict_lines(event, stop_below):
            print(line, flush=True)

    async def send_batch(paths: list[Path]) -> None:
        blobs = [await loop.run_in_executor(None, path.read_bytes) for path in paths]
        results = await loop.run_in_executor(None, stow_many, server, token, blobs)
        for path, result in zip(paths, results, strict=True):
            if result["status"] == "stored":
                pending.add(result["sop_uid"])
                print(f"{path.name}: sent", flush=True)
            else:
                print(f"{path.name}: refused - {result['reason']}", flush=True)
        for result in results:
            # A verdict can overtake the answer to a long request: it waited in ``early``.
            if result.get("sop_uid") in early:
                show(early.pop(result["sop_uid"]))

    async def sender() -> None:
        seen: set[Path] = set()
        last: dict[Path, tuple[int, int]] = {}
        waiting: list[Path] = list(files) if files is not None else []
        sizes: dict[Path, int] = {}
        requests_under_way: set[asyncio.Task[None]] = set()
        while True:
            if files is None:
                waiting += new_files(folder or Path("."), seen, last=last)
            for path in waiting:
                if path not in sizes:
                    sizes[path] = path.stat().st_size
            # Whatever is waiting goes now, in as few requests as the limits allow.
            while waiting and len(requests_under_way) < in_flight:
                batch = take_batch(waiting, sizes, max_files)
                requests_under_way.add(asyncio.create_task(send_batch(batch)))
            if files is not None and not waiting and not requests_under_way:
                return
            if requests_under_way:
                finished, _ = await asyncio.wait(
                    requests_under_way, timeout=POLL_S, return_when=asyncio.FIRST_COMPLETED
                )
                requests_under_way -= finished
                for request in finished:
                    request.result()  # a failed request stops the client, loudly
            else:
                await asyncio.sleep(POLL_S)

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
        if task.done() and not task.cancelled() and task.exception() is not None:
            listening.cancel()
            task.result()  # the sender's error, raised here
        if files is not None and task.done() and len(shown) >= len(pending):
            break  # every stored file has its verdict (or nothing was stored)
        if listening.done():
            raise SystemExit("the event connection closed")
        try:
            event = await asyncio.wait_for(queue.get(), timeout=1.0)
        except TimeoutError:
            continue
        if event.get("kind") != "instance.scored":
            continue
        sop = event["data"].get("sop_uid")
        if sop in pending:
            show(event)
        elif sop:
            early[sop] = event
            while len(early) > EARLY_KEPT:
                early.pop(next(iter(early)))
    listening.cancel()
    task.cancel()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workstation", description=__doc__)
    parser.add_argument("--server", required=True, help="e.g. https://artiscan.hospital.lan")
    parser.add_argument("--token-file", type=Path, required=True)
    parser.add_argument("--stop-below", type=int, default=None, help="suitability index 0-100")
    parser.add_argument(
        "--batch", type=int, default=8, help="most files in one STOW-RS request (default 8)"
    )
    parser.add_argument(
        "--in-flight", type=int, default=2, help="requests under way at once (default 2)"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    watch = sub.add_parser("watch", help="send every new file in a folder as it appears")
    watch.add_argument("folder", type=Path)
    send = sub.add_parser("send", help="send these files and wait for their verdicts")
    send.add_argument("files", type=Path, nargs="+")
    args = parser.parse_args(argv)
    if args.batch < 1 or args.in_flight < 1:
        parser.error("--batch and --in-flight must be at least 1")
    token = args.token_file.expanduser().read_text().strip()
    if args.command == "send":
        missing = [str(p) for p in args.files if not p.is_file()]
        if missing:
            print(f"not a file: {', '.join(missing)}", file=sys.stderr)
            return 2
        coro = run(
            args.server,
            token,
            args.files,
            None,
            args.stop_below,
            max_files=args.batch,
            in_flight=args.in_flight,
        )
    else:
        if not args.folder.is_dir():
            print(f"not a folder: {args.folder}", file=sys.stderr)
            return 2
        coro = run(
            args.server,
            token,
            None,
            args.folder,
            args.stop_below,
            max_files=args.batch,
            in_flight=args.in_flight,
        )
    try:
        return asyncio.run(coro)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
