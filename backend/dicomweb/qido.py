"""QIDO-RS query keys, matching and ``includefield`` (DICOM PS3.18 §8.3.4, PS3.4 C.2.2.2).

A query key is named by keyword or tag (``StudyDate`` or ``00080020``) and matched against what
the de-identified files hold, at the level of the resource searched or above (a search for
series may name study keys; a search for studies may not name a series key):

- UIDs: single value or UID list (``\\`` or ``,`` separated);
- dates: a single date or a range (``20240101-20240131``, ``20240101-``, ``-20240131``);
- strings: single value, with ``*`` and ``?`` wildcards; a patient's name case-insensitively;
- numbers (SeriesNumber, InstanceNumber): single value;
- attributes the de-identification removes (AccessionNumber, StudyID, ReferringPhysicianName,
  PatientBirthDate, PatientSex): empty in every file we hold, so only an empty or all-``*``
  value matches.

An empty value asks for the attribute without matching on it (universal matching). A key we
cannot match on is ignored and named in a ``Warning: 299`` header, as PS3.18 asks, and
``fuzzymatching=true`` is answered the same way (we match exactly). A value that is not what its
VR allows (a date that is not a date) is a 400 with the reason.

``includefield`` (repeated, or comma-separated; keyword or tag; ``all``) adds attributes to each
result: those of our own rows, then any other from the instance's stored metadata (for a study
or series, its first instance's), the same DICOM JSON as WADO-RS metadata, bulk data left out.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Literal

from django.db.models import Q, QuerySet
from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from rest_framework import exceptions

Level = Literal["study", "series", "instance"]
_DEPTH = {"study": 0, "series": 1, "instance": 2}
_PREFIX: dict[Level, dict[Level, str]] = {
    # The path from a queried model to the model a key's column is on.
    "study": {"study": ""},
    "series": {"study": "study__", "series": ""},
    "instance": {"study": "series__study__", "series": "series__", "instance": ""},
}
RESERVED = {"limit", "offset", "includefield", "fuzzymatching"}
_PRINTABLE = re.compile(r"[A-Za-z0-9_.-]{1,64}")


@dataclass(frozen=True)
class Key:
    tag: str
    level: Level
    kind: Literal["uid", "date", "text", "name", "number", "modality", "removed"]
    column: str = ""


KEYS: dict[str, Key] = {
    k.tag: k
    for k in (
        Key("0020000D", "study", "uid", "study_uid"),
        Key("00080020", "study", "date", "study_date"),
        Key("00100020", "study", "text", "patient_pseudonym"),  # PatientID
        Key("00100010", "study", "name", "patient_pseudonym"),  # PatientName
        Key("00081030", "study", "text", "description"),  # StudyDescription
        Key("00080061", "study", "modality"),  # ModalitiesInStudy
        Key("00080050", "study", "removed"),  # AccessionNumber
        Key("00200010", "study", "removed"),  # StudyID
        Key("00080090", "study", "removed"),  # ReferringPhysicianName
        Key("00100030", "study", "removed"),  # PatientBirthDate
        Key("00100040", "study", "removed"),  # PatientSex
        Key("0020000E", "series", "uid", "series_uid"),
        Key("00080060", "series", "text", "modality"),  # Modality
        Key("00200011", "series", "number", "series_number"),
        Key("0008103E", "series", "text", "description"),  # SeriesDescription
        Key("00080018", "instance", "uid", "sop_uid"),
        Key("00080016", "instance", "uid", "sop_class_uid"),
        Key("00200013", "instance", "number", "instance_number"),
    )
}


def tag_of(name: str) -> str | None:
    """``name`` (a keyword or 8 hex digits) as 8 upper-case hex digits; None if neither."""
    name = name.strip()
    if re.fullmatch(r"[0-9A-Fa-f]{8}", name):
        return name.upper()
    tag = tag_for_keyword(name)
    return None if tag is None else f"{tag:08X}"


@dataclass
class Query:
    matches: list[tuple[Key, str]] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    include_all: bool = False
    include: list[str] = field(default_factory=list)  # tags
    fuzzy: bool = False

    @property
    def includes(self) -> bool:
        """Whether ``includefield`` asks for anything."""
        return self.include_all or bool(self.include)

    def warning(self) -> str | None:
        """The ``Warning`` header PS3.18 §8.3.4 asks for, when something was not honoured."""
        parts = []
        if self.ignored:
            parts.append(
                "The following query keys are not supported and were ignored: "
                + ", ".join(self.ignored)
            )
        if self.fuzzy:
            parts.append("Fuzzy matching is not supported: the query was matched exactly")
        return f'299 ArtiScan: "{"; ".join(parts)}"' if parts else None


def parse(params: Any, level: Level) -> Query:
    """The query of ``params`` (a QueryDict) for a search of ``level`` resources."""
    query = Query()
    for name in params:
        if name in RESERVED:
            continue
        tag = tag_of(name)
        key = KEYS.get(tag) if tag else None
        if key is None or _DEPTH[key.level] > _DEPTH[level]:
            # Named back in a header: only what a keyword or tag can be made of.
            query.ignored.append(name if _PRINTABLE.fullmatch(name) else "(a malformed key)")
            continue
        for value in params.getlist(name):
            query.matches.append((key, value.strip()))
    query.fuzzy = params.get("fuzzymatching", "").lower() == "true"
    for value in params.getlist("includefield"):
        for name in value.split(","):
            if not name.strip():
                continue
            if name.strip().lower() == "all":
                query.include_all = True
                continue
            tag = tag_of(name)
            if tag is None:
                raise exceptions.ValidationError(f"includefield {name.strip()!r} is no attribute")
            query.include.append(tag)
    return query


def _date(text: str) -> date:
    try:
        return datetime.strptime(text.replace(".", ""), "%Y%m%d").date()
    except ValueError:
        raise exceptions.ValidationError(f"{text!r} is no date (YYYYMMDD)") from None


def _wildcard(value: str) -> str:
    return (
        "^" + "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in value) + "$"
    )


def _universal(value: str) -> bool:
    return value == "" or set(value) == {"*"}


def apply(qs: QuerySet[Any], query: Query, level: Level) -> QuerySet[Any]:
    """``qs`` (of ``level`` resources) narrowed by the query's matching keys."""
    for key, value in query.matches:
        if _universal(value):
            continue
        path = _PREFIX[level][key.level] + key.column
        if key.kind == "removed":
            return qs.none()  # the de-identification leaves it empty in every file
        if key.kind == "uid":
            qs = qs.filter(**{f"{path}__in": [u for u in re.split(r"[\\,]", value) if u]})
        elif key.kind == "date":
            low, dash, high = value.partition("-")
            if not dash:
                qs = qs.filter(**{path: _date(low)})
            else:
                if low:
                    qs = qs.filter(**{f"{path}__gte": _date(low)})
                if high:
                    qs = qs.filter(**{f"{path}__lte": _date(high)})
        elif key.kind == "number":
            try:
                qs = qs.filter(**{path: int(value)})
            except ValueError:
                raise exceptions.ValidationError(f"{value!r} is no integer") from None
        elif key.kind == "modality":
            from backend.studies.models import Series

            # A subquery, not a join: the counts annotated later stay those of every series.
            names = [m for m in re.split(r"[\\,]", value) if m]
            studies = Series.objects.filter(modality__in=names).values("study_id")
            qs = qs.filter(**{f"{_PREFIX[level]['study']}pk__in": studies})
        else:
            wild = "*" in value or "?" in value
            if key.kind == "name":
                lookup = "iregex" if wild else "iexact"
            else:
                lookup = "regex" if wild else "exact"
            qs = qs.filter(Q(**{f"{path}__{lookup}": _wildcard(value) if wild else value}))
    return qs


# --- includefield -----------------------------------------------------------------------------


def add_included(
    result: dict[str, Any], query: Query, metadata: str | None, *, all_tags: frozenset[str] | None
) -> None:
    """Fill ``result`` with the included attributes found in ``metadata`` (DICOM JSON of one
    instance). ``all_tags``: what ``includefield=all`` adds at this level (None: every tag)."""
    if metadata is None or not query.includes:
        return
    source: dict[str, Any] = json.loads(metadata)
    tags = list(query.include)
    if query.include_all:
        tags += [t for t in source if all_tags is None or t in all_tags]
    for tag in tags:
        if tag not in result and tag in source:
            result[tag] = source[tag]
    for tag in query.include:
        if tag not in result:
            result[tag] = {"vr": _vr(tag)}  # asked for, absent: present with no value


def _vr(tag: str) -> str:
    try:
        vr = dictionary_VR(int(tag, 16))
    except KeyError:
        return "UN"
    return vr.split(" or ")[0] if keyword_for_tag(int(tag, 16)) else "UN"


# What ``includefield=all`` adds to a study or series result from its first instance: the
# Patient, General Study and Patient Study modules (study), the General Series, MR Series and
# Frame of Reference modules (series) — attributes of the whole study or series, not of one
# image.
STUDY_ALL = frozenset(
    f"{tag_for_keyword(k):08X}"
    for k in (
        "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "PatientAge",
        "PatientIdentityRemoved", "DeidentificationMethod", "StudyDate", "StudyTime",
        "AccessionNumber", "ReferringPhysicianName", "StudyID", "StudyDescription",
        "StudyInstanceUID", "PatientSize", "PatientWeight",
    )
)  # fmt: skip
SERIES_ALL = frozenset(
    f"{tag_for_keyword(k):08X}"
    for k in (
        "Modality", "SeriesInstanceUID", "SeriesNumber", "SeriesDescription", "SeriesDate",
        "SeriesTime", "ProtocolName", "BodyPartExamined", "PatientPosition", "Laterality",
        "FrameOfReferenceUID", "Manufacturer", "ManufacturerModelName",
        "MagneticFieldStrength", "PerformedProcedureStepStartDate",
    )
)  # fmt: skip
