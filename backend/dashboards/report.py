"""The printable monthly report of one site: a PDF drawn with matplotlib (``PdfPages``).

matplotlib is imported here only, on demand, with the non-interactive Agg backend."""

from __future__ import annotations

import calendar
import datetime as dt
import io
from typing import Any

from backend.accounts.models import Site
from backend.accounts.selectors import AnyUser
from backend.dashboards import selectors
from backend.dashboards.models import NONDIAGNOSTIC
from backend.dashboards.services import ARTIFACT_TYPES

A4 = (8.27, 11.69)
TREND_WEEKS = 16


def _colour(artifact: str) -> tuple[float, float, float]:
    """The product palette: the sRGB of the SEG's CIELab colours, as the page's
    (frontend/src/common/artifacts.ts), so the report and the browser agree."""
    import highdicom as hd

    from backend.scoring.seg import COLOURS

    r, g, b = hd.color.CIELabColor(*COLOURS[artifact]).to_rgb(clip=True)
    return (r / 255, g / 255, b / 255)


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f} %"


def monthly_report_pdf(*, user: AnyUser, site: Site, year: int, month: int) -> bytes:
    """The report of ``site`` for the weeks starting in ``month`` (scoped by ``user``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.backends.backend_pdf import PdfPages

    first = dt.date(year, month, 1)
    last = dt.date(year, month, calendar.monthrange(year, month)[1])
    week_from = selectors.monday(first)
    if week_from < first:
        week_from += dt.timedelta(weeks=1)
    week_to = selectors.monday(last)
    filters = selectors.Filters(site=site.pk, week_from=week_from, week_to=week_to)
    summary = selectors.summary_table(user=user, filters=filters)
    heat = selectors.heatmap(user=user, filters=filters)
    worst = selectors.worst(user=user, filters=filters, by="protocol", metric=NONDIAGNOSTIC)
    trend_filters = selectors.Filters(
        site=site.pk, week_from=week_to - dt.timedelta(weeks=TREND_WEEKS - 1), week_to=week_to
    )
    trend = selectors.trend(user=user, filters=trend_filters)
    alerts = [
        a
        for a in selectors.alert_list(user=user, site_id=site.pk)
        if week_from <= a.week <= week_to
    ]
    total = sum(r["series"] for r in summary)
    nd = sum(r["nondiagnostic"] for r in summary)
    suit = sum((r["mean_suitability"] or 0) * r["series"] for r in summary)

    buffer = io.BytesIO()
    with PdfPages(buffer) as pdf:
        info = pdf.infodict()
        info["Title"] = f"ArtiScan image quality - {site.name} - {year:04d}-{month:02d}"
        info["CreationDate"] = None  # reproducible bytes for the same data

        fig = plt.figure(figsize=A4)
        fig.text(0.08, 0.95, "ArtiScan · monthly image-quality report", fontsize=16, weight="bold")
        fig.text(0.08, 0.92, f"{site.name} · {calendar.month_name[month]} {year}", fontsize=12)
        fig.text(0.08, 0.895, f"ISO weeks starting {week_from} to {week_to}", fontsize=9)
        kpis = [
            ("Series scored", f"{total}"),
            ("Non-diagnostic", _pct(nd / total if total else None)),
            ("Mean suitability", f"{suit / total:.2f}" if total else "—"),
            (
                "Open alerts",
                f"{sum(1 for a in alerts if a.acknowledged_at is None and a.withdrawn_at is None)}",
            ),
        ]
        for i, (label, value) in enumerate(kpis):
            fig.text(0.08 + i * 0.22, 0.85, value, fontsize=15, weight="bold")
            fig.text(0.08 + i * 0.22, 0.83, label, fontsize=8, color="0.35")
        ax = fig.add_axes((0.08, 0.52, 0.86, 0.26))
        weeks = [r["week"] for r in trend]
        index = list(range(len(trend)))

        def series_of(key: str) -> tuple[list[int], list[float]]:
            points = [(i, r[key]) for i, r in zip(index, trend, strict=True) if r[key] is not None]
            return [i for i, _ in points], [v for _, v in points]

        xs, lo = series_of("nondiagnostic_low")
        _, hi = series_of("nondiagnostic_high")
        _, rate = series_of("nondiagnostic_rate")
        ax.fill_between(xs, lo, hi, color="0.8", label="95 % Wilson interval")
        ax.plot(xs, rate, "o-", color="black", label="non-diagnostic")
        for artifact in _top_artifacts(summary, 3):
            ax.plot(
                *series_of(f"{artifact}_rate"),
                ".-",
                color=_colour(artifact),
                label=artifact.replace("_", " "),
            )
        in_month = [i for i, w in zip(index, weeks, strict=True) if w >= week_from.isoformat()]
        if in_month:
            ax.axvspan(in_month[0] - 0.5, in_month[-1] + 0.5, color="#fde68a", alpha=0.3)
        ax.set_xticks(index[::2], [w[5:] for w in weeks[::2]])
        ax.set_title(f"Weekly rates, last {TREND_WEEKS} weeks (month shaded)", fontsize=10)
        ax.set_ylim(bottom=0)
        ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
        ax.legend(fontsize=7, loc="upper left")
        ax.tick_params(labelsize=7)
        _table(
            fig,
            (0.08, 0.08, 0.86, 0.36),
            "Worst protocols (ranked by the lower 95 % bound of the non-diagnostic rate)",
            ["Protocol", "Series", "Non-diag.", "95 % CI"],
            [
                [
                    r["protocol"][:40],
                    r["series"],
                    _pct(r["rate"]),
                    f"{_pct(r['low'])}-{_pct(r['high'])}",
                ]
                for r in worst
            ],
            widths=[0.4, 0.15, 0.15, 0.3],
        )
        pdf.savefig(fig)
        plt.close(fig)

        fig = plt.figure(figsize=A4)
        ax = fig.add_axes((0.25, 0.55, 0.68, 0.35))
        labels = [r["scanner"] for r in heat]
        matrix: list[list[float]] = [
            [(r[f"{a}_rate"] or 0.0) for a in ARTIFACT_TYPES] for r in heat
        ]
        if matrix:
            image = ax.imshow(matrix, cmap="magma_r", vmin=0, vmax=max(0.05, max(map(max, matrix))))
            fig.colorbar(image, ax=ax, shrink=0.6, format=matplotlib.ticker.PercentFormatter(1.0))
            for i, values in enumerate(matrix):
                for j, share in enumerate(values):
                    dark = share > 0.5 * max(map(max, matrix))
                    ax.text(j, i, f"{100 * share:.0f}", ha="center", va="center", fontsize=6,
                            color="white" if dark else "black")  # fmt: skip
        ax.set_xticks(range(len(ARTIFACT_TYPES)), [a.replace("_", " ") for a in ARTIFACT_TYPES])
        ax.set_yticks(range(len(labels)), labels)
        ax.tick_params(axis="x", labelrotation=45, labelsize=7)
        ax.tick_params(axis="y", labelsize=7)
        ax.set_title("Scanner × artifact: share of series with the artifact (%)", fontsize=10)
        _table(
            fig,
            (0.08, 0.06, 0.86, 0.36),
            "Alerts of the month (rate jump against the trailing 8 weeks)",
            ["Week", "Scanner", "Metric", "Rate", "Baseline", "p", "Acknowledged"],
            [
                [
                    a.week.isoformat(),
                    str(a.scanner) if a.scanner else "—",
                    a.metric.replace("_", " "),
                    f"{a.count}/{a.total}",
                    _pct(a.baseline_rate),
                    f"{a.p_value:.1e}",
                    a.acknowledged_by.get_username()
                    if a.acknowledged_by
                    else "withdrawn"
                    if a.withdrawn_at
                    else "open",
                ]
                for a in alerts
            ],
            widths=[0.13, 0.27, 0.14, 0.1, 0.11, 0.1, 0.15],
        )
        pdf.savefig(fig)
        plt.close(fig)

        per_page = 28
        for start in range(0, max(1, len(summary)), per_page):
            fig = plt.figure(figsize=A4)
            _table(
                fig,
                (0.05, 0.05, 0.9, 0.88),
                "Per scanner and protocol",
                [
                    "Scanner",
                    "Protocol",
                    "Family",
                    "Series",
                    "Non-diag.",
                    "Suit.",
                    "Repeat",
                    "Verdict s",
                ],
                [
                    [
                        r["scanner"][:22],
                        r["protocol"][:26],
                        r["sequence_family"],
                        r["series"],
                        _pct(r["nondiagnostic_rate"]),
                        f"{r['mean_suitability']:.2f}"
                        if r["mean_suitability"] is not None
                        else "—",
                        _pct(r["repeat_rate"]),
                        f"{r['mean_verdict_s']:.1f}" if r["mean_verdict_s"] is not None else "—",
                    ]
                    for r in summary[start : start + per_page]
                ],
                widths=[0.22, 0.26, 0.08, 0.08, 0.1, 0.08, 0.09, 0.09],
            )
            pdf.savefig(fig)
            plt.close(fig)
    return buffer.getvalue()


def _top_artifacts(summary: list[dict[str, Any]], k: int) -> list[str]:
    totals = {a: sum((r[f"{a}_rate"] or 0) * r["series"] for r in summary) for a in ARTIFACT_TYPES}
    return [a for a, v in sorted(totals.items(), key=lambda kv: -kv[1])[:k] if v > 0]


def _table(fig: Any, rect: tuple[float, float, float, float], title: str, header: list[str],
           rows: list[list[Any]], widths: list[float] | None = None) -> None:  # fmt: skip
    ax = fig.add_axes(rect)
    ax.axis("off")
    ax.set_title(title, fontsize=10, loc="left")
    if not rows:
        ax.text(0, 0.9, "Nothing in this period.", fontsize=9, color="0.4")
        return
    table = ax.table(cellText=[[str(c) for c in r] for r in rows], colLabels=header,
                     loc="upper left", cellLoc="left", colWidths=widths)  # fmt: skip
    table.auto_set_font_size(False)
    table.set_fontsize(7)
    table.scale(1, 1.25)
