"""Reads that compute: agreement figures (with their CSV and plot) and active-learning
suggestions. Definitions are in ``docs/annotation.md``; the statistics in ``agreement``."""

from __future__ import annotations

import csv
import io
import itertools
from collections import defaultdict
from typing import Any

import numpy as np

from annotation import agreement
from annotation.models import Campaign, CampaignSeries
from annotation.selectors import campaign_latest_readings, model_scores
from annotation.services import readings_masks, stored_masks
from backend.dashboards.renderers import csv_safe
from backend.scoring.models import Finding, InstanceScore, ScoringRun
from backend.studies.models import Series

FIELDS = [
    "kind",
    "artifact_type",
    "reader_a",
    "reader_b",
    "slices",
    "iou",
    "dice",
    "cohen_kappa",
    "fleiss_kappa",
]


def _row(
    kind: str, type_: str, a: str, b: str, slices: int, **values: float | None
) -> dict[str, Any]:
    row: dict[str, Any] = {"kind": kind, "artifact_type": type_, "reader_a": a, "reader_b": b}
    row["slices"] = slices
    for name in ("iou", "dice", "cohen_kappa", "fleiss_kappa"):
        value = values.get(name)
        row[name] = None if value is None else round(float(value), 4)
    return row


def campaign_agreement(*, campaign: Campaign) -> list[dict[str, Any]]:
    """Agreement rows (see ``FIELDS``):

    - ``reader_pair`` per type: IoU and Dice pooled over the slices both read (intersections
      and unions summed, as ``ml evaluate`` pools), Cohen's kappa of the type's presence;
    - ``reader_pair`` "diagnostic": Cohen's kappa of the diagnostic yes/no label;
    - ``readers`` "diagnostic": Fleiss' kappa over slices with ``readers_per_image`` labels;
    - ``reader_model`` per type and "diagnostic": each reader against the current model run.
    """
    types = campaign.artifact_types
    readings = campaign_latest_readings(campaign=campaign)
    scores = model_scores(
        series_ids=list(
            CampaignSeries.objects.filter(campaign=campaign).values_list("series_id", flat=True)
        )
    )
    # per reader: instance id → (masks, types present, diagnostic)
    per_reader: dict[str, dict[str, tuple[dict[str, np.ndarray], set[str], bool | None]]] = (
        defaultdict(dict)
    )
    for instance_id, anns in readings.items():
        for ann, masks in zip(anns, readings_masks(anns, types), strict=True):
            per_reader[ann.assignment.reader.get_username()][instance_id] = (
                masks,
                set(ann.types_present),
                ann.diagnostic,
            )
    rows = []
    for a, b in itertools.combinations(sorted(per_reader), 2):
        common = sorted(set(per_reader[a]) & set(per_reader[b]))
        if not common:
            continue
        for name in types:
            sums = np.zeros(4, np.int64)
            for i in common:
                sums += agreement.overlap(per_reader[a][i][0][name], per_reader[b][i][0][name])
            rows.append(
                _row(
                    "reader_pair",
                    name,
                    a,
                    b,
                    len(common),
                    iou=sums[0] / sums[1] if sums[1] else None,
                    dice=2 * sums[0] / (sums[2] + sums[3]) if sums[2] + sums[3] else None,
                    cohen_kappa=agreement.cohen_kappa(
                        [name in per_reader[a][i][1] for i in common],
                        [name in per_reader[b][i][1] for i in common],
                    ),
                )
            )
        labelled = [
            i for i in common if per_reader[a][i][2] is not None and per_reader[b][i][2] is not None
        ]
        rows.append(
            _row(
                "reader_pair",
                "diagnostic",
                a,
                b,
                len(labelled),
                cohen_kappa=agreement.cohen_kappa(
                    [per_reader[a][i][2] for i in labelled], [per_reader[b][i][2] for i in labelled]
                ),
            )
        )
    full = [
        [ann.diagnostic for ann in anns]
        for anns in readings.values()
        if len(anns) == campaign.readers_per_image and all(x.diagnostic is not None for x in anns)
    ]
    if campaign.readers_per_image >= 2 and full:
        table, _ = agreement.category_table(full)
        if table.shape[1] == 1:  # everyone always said the same: add the unused category
            table = np.concatenate([table, np.zeros_like(table)], axis=1)
        rows.append(
            _row(
                "readers",
                "diagnostic",
                "all",
                "",
                len(full),
                fleiss_kappa=agreement.fleiss_kappa(table),
            )
        )
    for reader in sorted(per_reader):
        ids = sorted(per_reader[reader])
        findings: dict[tuple[str, str], Finding] = {}
        runs = {s.run_id for i, s in scores.items() if i in set(ids)}
        for f in Finding.objects.filter(
            run_id__in=runs, instance_id__in=ids, frame=1, artifact_type__in=types
        ):
            findings[(str(f.instance_id), f.artifact_type)] = f
        scored = [i for i in ids if i in scores]
        if not scored:
            continue
        for name in types:
            sums = np.zeros(4, np.int64)
            for i in scored:
                finding = findings.get((i, name))
                reader_mask = per_reader[reader][i][0][name]
                model_mask = (
                    stored_masks({name: finding.mask_key}, reader_mask.shape, [name])[name]
                    if finding is not None and finding.mask_key
                    else np.zeros_like(reader_mask)
                )
                sums += agreement.overlap(reader_mask, model_mask)
            rows.append(
                _row(
                    "reader_model",
                    name,
                    reader,
                    "model",
                    len(scored),
                    iou=sums[0] / sums[1] if sums[1] else None,
                    dice=2 * sums[0] / (sums[2] + sums[3]) if sums[2] + sums[3] else None,
                    cohen_kappa=agreement.cohen_kappa(
                        [name in per_reader[reader][i][1] for i in scored],
                        [(i, name) in findings for i in scored],
                    ),
                )
            )
        labelled = [i for i in scored if per_reader[reader][i][2] is not None]
        rows.append(
            _row(
                "reader_model",
                "diagnostic",
                reader,
                "model",
                len(labelled),
                cohen_kappa=agreement.cohen_kappa(
                    [per_reader[reader][i][2] for i in labelled],
                    [not scores[i].nondiagnostic for i in labelled],
                ),
            )
        )
    return rows


def agreement_csv(rows: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=FIELDS)
    writer.writeheader()
    for row in rows:
        # Reader names may begin with "-", "+" or "@": neutralised like the dashboards' CSV.
        writer.writerow({k: "" if row[k] is None else csv_safe(row[k]) for k in FIELDS})
    return out.getvalue()


def agreement_plot(rows: list[dict[str, Any]]) -> bytes:
    """A PNG: IoU per type for each reader pair and each reader against the model, and the
    label kappas."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [3, 2]})
    series_rows = [r for r in rows if r["artifact_type"] != "diagnostic"]
    types = sorted({r["artifact_type"] for r in series_rows})
    pairs = sorted({(r["reader_a"], r["reader_b"]) for r in series_rows})
    width = 0.8 / max(len(pairs), 1)
    for k, pair in enumerate(pairs):
        values = [
            next(
                (
                    r["iou"] or 0.0
                    for r in series_rows
                    if (r["reader_a"], r["reader_b"]) == pair and r["artifact_type"] == t
                ),
                0.0,
            )
            for t in types
        ]
        left.bar(np.arange(len(types)) + k * width, values, width, label=" vs ".join(pair))
    left.set_xticks(np.arange(len(types)) + 0.4 - width / 2, [t.replace("_", " ") for t in types])
    left.set_ylim(0, 1)
    left.set_ylabel("IoU (pooled over slices)")
    left.set_title("Mask agreement per type")
    if pairs:
        left.legend(fontsize=7)
    labels = [r for r in rows if r["artifact_type"] == "diagnostic"]
    names = [
        f"{r['reader_a']} vs {r['reader_b']}" if r["kind"] != "readers" else "Fleiss (all)"
        for r in labels
    ]
    kappas = [
        (r["cohen_kappa"] if r["kind"] != "readers" else r["fleiss_kappa"]) or 0.0 for r in labels
    ]
    right.barh(range(len(kappas)), kappas, color="#4c78a8")
    right.set_yticks(range(len(kappas)), names, fontsize=7)
    right.set_xlim(-1, 1)
    right.axvline(0, color="grey", lw=0.8)
    right.set_xlabel("kappa, diagnostic yes/no")
    right.set_title("Label agreement")
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=90)
    plt.close(fig)
    return out.getvalue()


def active_learning_suggest(*, campaign: Campaign, limit: int = 10) -> list[dict[str, Any]]:
    """The site's scored series not yet in this campaign, most useful to annotate first.

    ``uncertainty``: mean over slices of 1 - |2s - 1| for the slice suitability s (1 at 0.5);
    ``mask_uncertainty``: the same of each finding's confidence; ``disagreement``: 1 when two
    model versions disagree on whether the series is diagnostic. Score = 0.5·uncertainty +
    0.3·mask_uncertainty + 0.2·disagreement.
    """
    taken = CampaignSeries.objects.filter(campaign=campaign).values_list("series_id", flat=True)
    candidates = list(
        Series.objects.filter(site_id=campaign.site_id, current_run__isnull=False)
        .exclude(pk__in=taken)
        .only("id", "current_run_id", "description", "series_number", "suitability")
    )
    run_ids = [s.current_run_id for s in candidates]
    suit: dict[object, list[float]] = defaultdict(list)
    for run_id, value in InstanceScore.objects.filter(run_id__in=run_ids).values_list(
        "run_id", "suitability"
    ):
        suit[run_id].append(value)
    conf: dict[object, list[float]] = defaultdict(list)
    for run_id, value in Finding.objects.filter(run_id__in=run_ids).values_list(
        "run_id", "confidence"
    ):
        conf[run_id].append(value)
    verdicts: dict[object, set[bool]] = defaultdict(set)
    for series_id, nondiag in ScoringRun.objects.filter(
        series_id__in=[s.pk for s in candidates], nondiagnostic__isnull=False
    ).values_list("series_id", "nondiagnostic"):
        verdicts[series_id].add(bool(nondiag))
    out = []
    for s in candidates:
        values = np.asarray(suit.get(s.current_run_id, []), np.float64)
        if not len(values):
            continue
        confs = np.asarray(conf.get(s.current_run_id, []), np.float64)
        uncertainty = float(np.mean(1 - np.abs(2 * values - 1)))
        mask_unc = float(np.mean(1 - np.abs(2 * confs - 1))) if len(confs) else 0.0
        disagreement = 1.0 if len(verdicts.get(s.pk, set())) > 1 else 0.0
        out.append(
            {
                "series_id": str(s.pk),
                "series_number": s.series_number,
                "description": s.description,
                "suitability_index": None if s.suitability is None else round(s.suitability * 100),
                "uncertainty": round(uncertainty, 4),
                "mask_uncertainty": round(mask_unc, 4),
                "disagreement": disagreement,
                "score": round(0.5 * uncertainty + 0.3 * mask_unc + 0.2 * disagreement, 4),
            }
        )
    out.sort(key=lambda row: -float(row["score"] or 0))
    return out[:limit]
