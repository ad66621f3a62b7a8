"""``python manage.py deidentify IN_DIR OUT_DIR``: the ingest profile, file by file.

Walks IN_DIR recursively (files with or without extensions; symbolic links are not followed),
writes only de-identified DICOM files into OUT_DIR (named by their new SOPInstanceUID), prints one
line per refused file with its reason, and exits 1 if any file was refused. It never prints
header values: a line names the file by its path relative to IN_DIR, as the user gave it.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from backend.deid.profile import Rejected, deidentify_bytes


def _printable(path: Path) -> str:
    # A file name is user input: no control characters reach the terminal or a log.
    return "".join(c if c.isprintable() else "?" for c in str(path))


def _write_atomically(target: Path, data: bytes) -> None:
    """Write to a temporary name in the same directory and rename, so OUT_DIR never holds a
    partial file, even if the disk fills up or the command is interrupted."""
    fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=".deid-", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


class Command(BaseCommand):
    help = "De-identify every DICOM file under IN_DIR into OUT_DIR with the ingest profile."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("in_dir", type=Path)
        parser.add_argument("out_dir", type=Path)

    def handle(self, *args: Any, in_dir: Path, out_dir: Path, **options: Any) -> None:
        if not in_dir.is_dir():
            raise CommandError(f"{_printable(in_dir)} is not a directory")
        if out_dir.resolve().is_relative_to(in_dir.resolve()):
            raise CommandError("OUT_DIR must not be inside IN_DIR")
        out_dir.mkdir(parents=True, exist_ok=True)
        files = sorted(p for p in in_dir.rglob("*") if p.is_file() and not p.is_symlink())
        limit = settings.ARTISCAN_MAX_INSTANCE_BYTES
        refused = 0
        for path in tqdm(files, desc="de-identifying", unit="file", disable=None, file=sys.stderr):
            name = _printable(path.relative_to(in_dir))
            try:
                if path.stat().st_size > limit:
                    raise Rejected(f"file larger than the {limit // 2**20} MiB limit")
                data, ds = deidentify_bytes(path.read_bytes(), key=settings.DEID_KEY,
                                            max_bytes=limit)  # fmt: skip
            except Rejected as refusal:
                refused += 1
                self.stdout.write(f"refused {name}: {refusal.reason}")
                continue
            except OSError as exc:
                refused += 1
                self.stdout.write(f"refused {name}: cannot read ({exc.strerror})")
                continue
            try:
                _write_atomically(out_dir / f"{ds.SOPInstanceUID}.dcm", data)
            except OSError as exc:
                raise CommandError(f"cannot write into OUT_DIR ({exc.strerror})") from None
        self.stdout.write(f"{len(files) - refused} de-identified, {refused} refused")
        if refused:
            sys.exit(1)
