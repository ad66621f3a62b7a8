"""CSV export of every dashboard table: ``?format=csv`` on the same endpoint as the JSON."""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from typing import Any

from rest_framework.renderers import BaseRenderer

# A cell starting with one of these is a formula to a spreadsheet; protocol names come from
# DICOM headers, so they are neutralised (OWASP "CSV injection").
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(value: Any) -> Any:
    """``value``, with a leading ``'`` when it is a string a spreadsheet would read as a formula
    (every CSV the platform writes goes through this)."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def _cell(value: Any) -> Any:
    value = csv_safe(value)
    if isinstance(value, float):
        return f"{value:.6g}"
    return "" if value is None else value


class CSVRenderer(BaseRenderer):
    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    def render(
        self,
        data: Any,
        accepted_media_type: str | None = None,
        renderer_context: Mapping[str, Any] | None = None,
    ) -> bytes:
        out = io.StringIO()
        writer = csv.writer(out)
        if isinstance(data, dict) and "rows" in data:
            rows = data["rows"]
            columns = data.get("columns") or (list(rows[0]) if rows else [])
            writer.writerow(columns)
            for row in rows:
                writer.writerow([_cell(row.get(c)) for c in columns])
        else:  # an error body
            writer.writerow(["detail"])
            writer.writerow(
                [_cell(str(data.get("detail", data) if isinstance(data, dict) else data))]
            )
        response = (renderer_context or {}).get("response")
        view = (renderer_context or {}).get("view")
        if response is not None and response.status_code < 400:
            name = getattr(view, "export_name", "artiscan")
            response["Content-Disposition"] = f'attachment; filename="{name}.csv"'
        return out.getvalue().encode()
