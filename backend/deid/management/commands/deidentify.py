"""``python manage.py deidentify IN_DIR OUT_DIR``: the ingest profile, file by file.

Walks IN_DIR recursively (files with or without extensions), writes only de-identified DICOM
files into OUT_DIR (named by their new SOPInstanceUID), prints one line per refused file with its
reason, and exits 1 if any file was refused. It never prints header values.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from backend.deid.profile import Rejected, deidentify_bytes


class Command(BaseCommand):
    help = "De-identify every DICOM file under IN_DIR into OUT_DIR with the ingest profile."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("in_dir", type=Path)
        parser.add_argument("out_dir", type=Path)

    def handle(self, *args: Any, in_dir: Path, out_dir: Path, **options: Any) -> None:
        if not in_dir.is_dir():
            raise CommandError(f"{in_dir} is not a directory")
        if out_dir.resolve().is_relative_to(in_dir.resolve()):
            raise CommandError("OUT_DIR must not be inside IN_DIR")
        out_dir.mkdir(parents=True, exist_ok=True)
        files = sorted(p for p in in_dir.rglob("*") if p.is_file() and not p.is_symlink())
        refused = 0
        for path in tqdm(files, desc="de-identifying", unit="file", disable=None, file=sys.stderr):
            name = path.relative_to(in_dir)
            try:
                if path.stat().st_size > settings.ARTISCAN_MAX_INSTANCE_BYTES:
                    raise Rejected("file larger than the instance size limit")
                data, ds = deidentify_bytes(
                    path.read_bytes(),
                    key=settings.DEID_KEY,
                    max_bytes=settings.ARTISCAN_MAX_INSTANCE_BYTES,
                )
            except Rejected as refusal:
                refused += 1
                self.stdout.write(f"refused {name}: {refusal.reason}")
                continue
            except OSError as exc:
                refused += 1
                self.stdout.write(f"refused {name}: cannot read ({exc.strerror})")
                continue
            (out_dir / f"{ds.SOPInstanceUID}.dcm").write_bytes(data)
        self.stdout.write(f"{len(files) - refused} de-identified, {refused} refused")
        if refused:
            sys.exit(1)
