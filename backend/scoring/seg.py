"""Scoring results as a DICOM Segmentation (highdicom), so any DICOMweb viewer (OHIF) shows the
artifact masks over the series: one segment per artifact type found, referencing the source
instances. It is stored and indexed as a series of the same study (modality SEG) and served by
our WADO-RS/QIDO-RS like every other instance."""

from __future__ import annotations

import io
import uuid
import warnings

import highdicom as hd
import numpy as np
import pydicom
from django.db import transaction
from pydicom.sr.codedict import codes

from backend.scoring.masks import mask_get
from backend.scoring.models import Finding, ScoringRun
from backend.storage.store import store_get, store_put
from backend.studies.models import Instance, Series, SeriesStatus

SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
ARTIFACT = hd.sr.CodedConcept(value="47973001", scheme_designator="SCT", meaning="Artifact")
# CIELab display colours, the same per type everywhere in the product.
COLOURS = {
    "motion": (60.0, 60.0, 50.0), "ghosting": (70.0, -40.0, 50.0), "aliasing": (60.0, 50.0, -60.0),
    "chemical_shift": (85.0, -10.0, 80.0), "susceptibility": (50.0, 70.0, 40.0),
    "zipper": (90.0, -50.0, -10.0), "spike": (55.0, 80.0, -20.0), "gibbs": (75.0, 20.0, 70.0),
    "bias_field": (65.0, -30.0, -40.0), "noise": (80.0, 0.0, 0.0),
}  # fmt: skip


_TYPE2_COPIED = (
    "StudyID", "AccessionNumber", "ReferringPhysicianName", "StudyDate", "StudyTime",
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex",
)  # fmt: skip


def _uid(run: ScoringRun, label: str) -> str:
    """Deterministic per run and label: a rebuilt SEG replaces the previous one."""
    return str(hd.UID.from_uuid(str(uuid.uuid5(run.pk, label))))


def _groups(instances: list[Instance]) -> list[tuple[str, list[Instance]]]:
    """The SEG objects of a series, each with its UID label and sources: one over its classic
    (single-frame) instances, and one per multi-frame instance — a SEG may reference the frames
    of one multi-frame source only (PS3.3 C.8.20.2, as highdicom enforces)."""
    classic = [i for i in instances if i.frame_count <= 1]
    groups = [("sop", classic)] if classic else []
    return groups + [(f"sop:{i.sop_uid}", [i]) for i in instances if i.frame_count > 1]


def seg_build(run: ScoringRun) -> list[tuple[bytes, pydicom.Dataset]]:
    """The SEG objects of ``run`` (one segment per type found; :func:`_groups`), none if
    nothing was found."""
    findings = list(Finding.objects.filter(run=run).select_related("instance"))
    if not findings:
        return []
    instances = sorted(
        {f.instance for f in findings} | set(run.series.instances.all()),
        key=lambda i: (i.instance_number or 0, i.sop_uid),
    )
    built = []
    for number, (label, group) in enumerate(_groups(instances), start=1):
        own = {i.pk for i in group}
        mine = [f for f in findings if f.instance_id in own]
        if mine:
            built.append(_seg_of(run, group, mine, label, number))
    return built


def _seg_of(
    run: ScoringRun, instances: list[Instance], findings: list[Finding], label: str, number: int
) -> tuple[bytes, pydicom.Dataset]:
    """One SEG over ``instances`` (classic ones, or a single multi-frame one frame by frame)."""
    sources = [pydicom.dcmread(io.BytesIO(store_get(i.storage_key))) for i in instances]
    for source in sources:
        # Type 2 attributes the SEG copies from its sources: present, possibly empty.
        for keyword in _TYPE2_COPIED:
            if keyword not in source:
                setattr(source, keyword, None)
    types = sorted({f.artifact_type for f in findings}, key=list(COLOURS).index)
    rows, columns = int(sources[0].Rows), int(sources[0].Columns)
    multi_frame = len(instances) == 1 and instances[0].frame_count > 1
    planes = instances[0].frame_count if multi_frame else len(instances)
    pixels = np.zeros((planes, rows, columns, len(types)), dtype=bool)
    position = {i.pk: n for n, i in enumerate(instances)}
    for finding in findings:
        plane = finding.frame - 1 if multi_frame else position[finding.instance_id]
        pixels[plane, :, :, types.index(finding.artifact_type)] = mask_get(finding.mask_key) > 0
    algorithm = hd.AlgorithmIdentificationSequence(
        name="ArtiScan artifact model",
        family=codes.cid7162.ArtificialIntelligence,
        version=run.model_version.version,
    )
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=n + 1,
            segment_label=artifact.replace("_", " "),
            segmented_property_category=ARTIFACT,
            segmented_property_type=hd.sr.CodedConcept(
                value=artifact.upper()[:16], scheme_designator="99ARTISCAN", meaning=artifact
            ),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
            display_color=hd.color.CIELabColor(*COLOURS[artifact]),
        )
        for n, artifact in enumerate(types)
    ]
    with warnings.catch_warnings():
        # The patient's name is our pseudonym ("ANON-..."), one component by design: highdicom
        # warned about it once per SEG, a line in the worker's log for every scored series.
        warnings.filterwarnings("ignore", "The string .* person name", UserWarning)
        seg = hd.seg.Segmentation(
            source_images=sources,
            pixel_array=pixels,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=descriptions,
            series_instance_uid=_uid(run, "series"),
            series_number=9000 + (sources[0].get("SeriesNumber") or 0),
            sop_instance_uid=_uid(run, label),
            instance_number=number,
            manufacturer="ArtiScan",
            manufacturer_model_name="artifact model",
            software_versions=run.model_version.version,
            device_serial_number="0",
            series_description=f"ArtiScan artifacts ({run.model_version.name})"[:64],
        )
    out = io.BytesIO()
    seg.save_as(out)
    return out.getvalue(), seg


def seg_store(run: ScoringRun) -> list[Instance]:
    """Build, store and index the SEG objects of ``run`` (idempotent: the same UIDs each time),
    all in one SEG series of the study; none when nothing was found."""
    return [_seg_put(run, data, seg) for data, seg in seg_build(run)]


def _seg_put(run: ScoringRun, data: bytes, seg: pydicom.Dataset) -> Instance:
    source = run.series
    # The classic instances' SEG keeps the name it always had; a frame-by-frame one its UID's.
    name = "seg" if seg.SOPInstanceUID == _uid(run, "sop") else str(seg.SOPInstanceUID)
    key = f"instances/{source.site_id}/{source.study.study_uid}/{seg.SeriesInstanceUID}/{name}.dcm"
    size = store_put(key, data)
    with transaction.atomic():
        series, _ = Series.objects.get_or_create(
            study=source.study,
            series_uid=str(seg.SeriesInstanceUID),
            defaults={
                "site_id": source.site_id,
                "modality": "SEG",
                "series_number": int(seg.SeriesNumber),
                "description": str(seg.SeriesDescription),
                "status": SeriesStatus.COMPLETE,
            },
        )
        instance, created = Instance.objects.update_or_create(
            series=series,
            sop_uid=str(seg.SOPInstanceUID),
            defaults={
                "site_id": source.site_id,
                "sop_class_uid": SEG_SOP_CLASS,
                "instance_number": int(seg.InstanceNumber),
                "storage_key": key,
                "size_bytes": size,
                "frame_count": int(seg.NumberOfFrames),
                "rows": int(seg.Rows),
                "columns": int(seg.Columns),
            },
        )
        if created:
            Series.objects.filter(pk=series.pk).update(instance_count=series.instances.count())
    return instance
