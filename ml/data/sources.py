"""Loaders for the real brain MR volumes that ship inside installed packages.

Every loader returns a :class:`SourceVolume`: float32 maps on one voxel grid, reoriented to the
closest RAS+ orientation, so array axis 0 runs left→right, axis 1 posterior→anterior and axis 2
inferior→superior (an axial slice is ``map[:, :, k]``). Nothing is downloaded: a source whose
package or install step is missing raises :class:`SourceMissing` naming that step.

Map keys, by what they hold:

- tissue probabilities in [0, 1]: ``gm``, ``wm``, ``csf``, ``bone``, ``soft`` (scalp, muscle, fat),
  ``air`` (background and sinuses);
- weighted images (arbitrary units, ≥ 0): ``T1``, ``T2``, ``PD``;
- measured relaxometry: ``t1_ms``, ``t2_ms`` (milliseconds), ``pd`` (relative spin density),
  ``ppm`` (off-resonance, parts per million).
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import re
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

Kind = Literal["tissue", "weighted", "relaxometry"]
TISSUE_KEYS: tuple[str, ...] = ("gm", "wm", "csf", "bone", "soft", "air")
WEIGHTED_KEYS: tuple[str, ...] = ("T1", "T2", "PD")
RELAXOMETRY_KEYS: tuple[str, ...] = ("t1_ms", "t2_ms", "pd", "ppm")

INSTALL_PIP = "pip install -r requirements/ml.txt"
INSTALL_NODEPS = "pip install --no-deps -r requirements/ml-nodeps.txt"
INSTALL_ODIN = "bash deploy/install-ml-data.sh"


class SourceMissing(RuntimeError):
    """A packaged source is not installed; the message names the install step."""


@dataclass(frozen=True)
class SourceVolume:
    """One source volume.

    ``maps``: name → float32 array ``(X, Y, Z)`` in RAS+ axis order (a 2-D source has Z = 1).
    ``voxel_mm``: voxel size in millimetres along (X, Y, Z). ``kind`` says which map family makes
    the contrast (tissue probabilities, fixed weighted images, or measured T1/T2/PD).
    ``subject`` is the unit the train/val/test split holds out: maps of one subject never straddle
    two splits. ``citation`` names the data's origin.
    """

    name: str
    subject: str
    kind: Kind
    maps: Mapping[str, NDArray[np.float32]]
    voxel_mm: tuple[float, float, float]
    citation: str

    @property
    def shape(self) -> tuple[int, int, int]:
        first = next(iter(self.maps.values()))
        return (int(first.shape[0]), int(first.shape[1]), int(first.shape[2]))


def _package_dir(module: str, install: str) -> Path:
    # find_spec locates the package without executing it (nimare's __init__ needs its full deps).
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise SourceMissing(f"package {module!r} is not installed: run `{install}`")
    return Path(next(iter(spec.submodule_search_locations)))


def _canonical(img: Any) -> tuple[NDArray[np.float32], tuple[float, float, float]]:
    import nibabel as nib

    img = nib.as_closest_canonical(img)  # type: ignore[no-untyped-call]
    data = np.asarray(img.dataobj, dtype=np.float32)
    zooms = img.header.get_zooms()
    data = np.nan_to_num(data, nan=0.0, posinf=0.0, neginf=0.0)
    return data, (float(zooms[0]), float(zooms[1]), float(zooms[2]))


def _load_nifti(path: Path) -> tuple[NDArray[np.float32], tuple[float, float, float]]:
    import nibabel as nib

    return _canonical(nib.load(str(path)))


def _unit(a: NDArray[np.float32]) -> NDArray[np.float32]:
    """Scale a weighted image so its 99.9th percentile is 1 (negative values clipped)."""
    a = np.clip(a, 0.0, None)
    top = float(np.percentile(a[a > 0], 99.9)) if np.any(a > 0) else 1.0
    return np.asarray(np.clip(a / max(top, 1e-12), 0.0, 1.5), dtype=np.float32)


def load_icbm152_2009a() -> SourceVolume:
    """nilearn's ICBM152 2009a (symmetric) T1 template and GM/WM probability maps, 1 mm.

    Shipped in nilearn's package data (``load_mni152_*_template(resolution=1)`` reads them from
    the wheel; no fetcher is used). CSF is the remainder of the brain mask (T1 > 0) after GM and
    WM. The template is skull-stripped, so there is no bone, scalp or fat: air is 1 - brain.
    """
    try:
        from nilearn import datasets
    except ImportError as exc:
        raise SourceMissing(f"nilearn is not installed: run `{INSTALL_PIP}`") from exc
    t1, zooms = _canonical(datasets.load_mni152_template(resolution=1))
    gm, _ = _canonical(datasets.load_mni152_gm_template(resolution=1))
    wm, _ = _canonical(datasets.load_mni152_wm_template(resolution=1))
    brain = (t1 > 0.02 * float(t1.max())).astype(np.float32)
    gm = np.clip(gm, 0, 1) * brain
    wm = np.clip(wm, 0, 1) * brain
    total = gm + wm
    over = total > 1
    gm[over] /= total[over]
    wm[over] /= total[over]
    csf = np.clip(brain - gm - wm, 0, 1)
    zeros = np.zeros_like(gm)
    maps = {
        "gm": gm,
        "wm": wm,
        "csf": csf,
        "bone": zeros,
        "soft": zeros,
        "air": 1 - brain,
        "T1": _unit(t1),
    }
    return SourceVolume(
        name="icbm152_2009a",
        subject="icbm152_2009a",
        kind="tissue",
        maps={k: np.asarray(v, dtype=np.float32) for k, v in maps.items()},
        voxel_mm=zooms,
        citation="Fonov et al. 2009/2011, ICBM 2009a nonlinear symmetric (via nilearn)",
    )


def load_nimare_mni152() -> SourceVolume:
    """nimare's ``tpl-MNI152NLin6Asym_res-01_T1w``: MNI152 T1 with skull and scalp, 1 mm."""
    root = _package_dir("nimare", INSTALL_NODEPS)
    path = root / "resources" / "templates" / "tpl-MNI152NLin6Asym_res-01_T1w.nii.gz"
    if not path.is_file():
        raise SourceMissing(f"{path} is missing: run `{INSTALL_NODEPS}`")
    t1, zooms = _load_nifti(path)
    return SourceVolume(
        name="nimare_mni152",
        subject="mni152_nlin6asym",
        kind="weighted",
        maps={"T1": _unit(t1)},
        voxel_mm=zooms,
        citation="MNI152NLin6Asym (FSL MNI152, Jenkinson et al. 2012) shipped by nimare",
    )


def load_pydeface_head() -> SourceVolume:
    """pydeface's mean head template ``mean_reg2mean.nii.gz``: T1 with face and scalp, ~1 mm."""
    root = _package_dir("pydeface", INSTALL_NODEPS)
    path = root / "data" / "mean_reg2mean.nii.gz"
    if not path.is_file():
        raise SourceMissing(f"{path} is missing: run `{INSTALL_NODEPS}`")
    t1, zooms = _load_nifti(path)
    return SourceVolume(
        name="pydeface_head",
        subject="pydeface_mean_head",
        kind="weighted",
        maps={"T1": _unit(t1)},
        voxel_mm=zooms,
        citation="pydeface mean head template (Gulban et al., poldracklab/pydeface)",
    )


_SPM_PREFIX = "fsroot/_spm/cleaned/spm/"


def _spm_read(member: str) -> Any:
    import nibabel as nib

    root = _package_dir("spm_runtime", INSTALL_NODEPS)
    ctf = root / "_spm" / "_spm.ctf"
    if not ctf.is_file():
        raise SourceMissing(f"{ctf} is missing: run `{INSTALL_NODEPS}`")
    with zipfile.ZipFile(ctf) as archive:
        try:
            raw = archive.read(_SPM_PREFIX + member)
        except KeyError as exc:
            raise SourceMissing(
                f"{member} is not inside {ctf}: reinstall with `{INSTALL_NODEPS}`"
            ) from exc
    return nib.Nifti1Image.from_bytes(raw)


def load_spm_tpm() -> SourceVolume:
    """SPM's tissue probability map ``tpm/TPM.nii``: six classes at 1.5 mm.

    Volumes in order: GM, WM, CSF, bone, soft tissue, air/background (Ashburner & Friston 2005,
    SPM12 TPM from the IXI data by Lorio et al. 2016).
    """
    data, zooms = _canonical(_spm_read("tpm/TPM.nii"))
    data = np.clip(data, 0.0, 1.0)
    maps = {key: np.ascontiguousarray(data[..., i]) for i, key in enumerate(TISSUE_KEYS)}
    return SourceVolume(
        name="spm_tpm",
        subject="spm_tpm_ixi",
        kind="tissue",
        maps=maps,
        voxel_mm=zooms,
        citation="SPM12 TPM.nii (Lorio et al. 2016, IXI subjects) from spm-runtime-r2025b",
    )


def load_spm_avg152() -> SourceVolume:
    """SPM's canonical ``avg152T1/T2/PD.nii``: three weightings of the same 152-brain mean, 2 mm."""
    maps: dict[str, NDArray[np.float32]] = {}
    zooms = (2.0, 2.0, 2.0)
    for weighting in WEIGHTED_KEYS:
        data, zooms = _canonical(_spm_read(f"canonical/avg152{weighting}.nii"))
        maps[weighting] = _unit(data)
    return SourceVolume(
        name="spm_avg152",
        subject="spm_avg152",
        kind="weighted",
        maps=maps,
        voxel_mm=zooms,
        citation="SPM canonical avg152 T1/T2/PD (ICBM 152, MNI) from spm-runtime-r2025b",
    )


def ml_data_dir() -> Path:
    """Where install-time data lives: ``$ARTISCAN_ML_DATA`` or ``<repo>/var/ml-data``."""
    env = os.environ.get("ARTISCAN_ML_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "var" / "ml-data"


_SMP_ARRAY = re.compile(
    r"##\$(?P<name>\w+)=\((?P<dims>[^)]*)\)\s*\n"
    r"Encoding:base64,(?P<endian>littleEndian|bigEndian),(?P<type>float|double)\s*\n"
    r"(?P<data>[A-Za-z0-9+/=\s]*?)(?=\n##)",
)


def read_smp(path: Path) -> dict[str, NDArray[np.float32]]:
    """Read the arrays of an ODIN virtual-sample file (``.smp``).

    The format is JCAMP-DX 4.24 text (ODIN's ``JcampDxBlock``): ``##$Name=( d0, d1, ... )`` then a
    line ``Encoding:base64,littleEndian,float`` and the base64 payload. ODIN's ``Sample`` stores
    maps with dimensions (frame, freq, z, y, x), x fastest. Returns name → float32 array of the
    declared shape; scalar and empty parameters are skipped.
    """
    text = path.read_text(encoding="ascii")
    arrays: dict[str, NDArray[np.float32]] = {}
    for match in _SMP_ARRAY.finditer(text):
        dims = tuple(int(d) for d in match["dims"].split(",") if d.strip())
        dtype = np.dtype("f4" if match["type"] == "float" else "f8")
        dtype = dtype.newbyteorder("<" if match["endian"] == "littleEndian" else ">")
        raw = base64.b64decode("".join(match["data"].split()))
        values = np.frombuffer(raw, dtype=dtype)
        if values.size != int(np.prod(dims)):
            raise ValueError(f"{path}: {match['name']} has {values.size} values for shape {dims}")
        arrays[match["name"]] = values.reshape(dims).astype(np.float32)
    return arrays


def load_odin_brain() -> SourceVolume:
    """ODIN's measured brain slice ``brain_128x128.smp``: T1, T2 (ms), spin density, ppm maps.

    One 128 x 128 axial slice over a 200 x 200 mm FOV (4 mm thick), from the Debian ``odin``
    package, unpacked at install time by ``deploy/install-ml-data.sh``.
    """
    path = ml_data_dir() / "odin" / "samples" / "brain_128x128.smp"
    if not path.is_file():
        raise SourceMissing(f"{path} is missing: run `{INSTALL_ODIN}` (needs apt-get)")
    arrays = read_smp(path)
    fov = (200.0, 200.0, 4.0)
    text = path.read_text(encoding="ascii")
    found = re.search(r"##\$FOV=\(\s*3\s*\)\s*\n([^\n]+)", text)
    if found:
        fov = tuple(float(v) for v in found.group(1).split()[:3])  # type: ignore[assignment]

    def plane(name: str) -> NDArray[np.float32]:
        # (1, 1, 1, y, x) → RAS (x, y, 1); ODIN's row 0 is anterior, so flip y to run P→A.
        yx = arrays[name].reshape(arrays[name].shape[-2:])
        return np.ascontiguousarray(yx[::-1, :].T[:, :, None])

    pd = plane("spinDensity")
    pd_max = float(pd.max()) if pd.max() > 0 else 1.0
    maps = {
        "t1_ms": plane("T1map"),
        "t2_ms": plane("T2map"),
        "pd": np.asarray(pd / pd_max, dtype=np.float32),
        "ppm": plane("ppmMap"),
    }
    nx, ny = maps["pd"].shape[:2]
    return SourceVolume(
        name="odin_brain",
        subject="odin_brain",
        kind="relaxometry",
        maps=maps,
        voxel_mm=(fov[0] / nx, fov[1] / ny, fov[2]),
        citation="ODIN virtual sample brain_128x128 (Jochimsen & von Mengershausen), Debian odin",
    )


LOADERS: dict[str, Callable[[], SourceVolume]] = {
    "icbm152_2009a": load_icbm152_2009a,
    "nimare_mni152": load_nimare_mni152,
    "pydeface_head": load_pydeface_head,
    "spm_tpm": load_spm_tpm,
    "spm_avg152": load_spm_avg152,
    "odin_brain": load_odin_brain,
}
"""Every packaged source, by name."""


PACK_ENV = "ARTISCAN_SOURCE_PACK"
"""Environment variable naming a source pack (:func:`pack_sources`): the sources it holds are read
from it instead of their packages, in this process and in the data set's worker processes."""


def load_source(name: str) -> SourceVolume:
    """Load one source by its name in :data:`LOADERS`; :class:`SourceMissing` if not installed.

    When ``$ARTISCAN_SOURCE_PACK`` names a pack that holds the source, it comes from there.
    """
    if name not in LOADERS:
        raise KeyError(f"unknown source {name!r}; known: {', '.join(LOADERS)}")
    pack = os.environ.get(PACK_ENV)
    if pack:
        volumes = read_pack(Path(pack), [name])
        if name in volumes:
            return volumes[name]
    return LOADERS[name]()


def pack_sources(names: list[str], path: Path) -> dict[str, int]:
    """Write the named sources to one ``.npz`` (maps as float16, deflated) that a machine without
    their packages can build data sets from (``$ARTISCAN_SOURCE_PACK``; a GPU box, say).

    float16 keeps ~3 significant digits (relative error ≤ 4.9e-4 above 6e-5, absolute ≤ 3e-8
    below, where tissue probabilities are negligible anyway); slices built from a pack stay within
    0.2 % of the slice's peak of those built from the packages (tested). Returns name →
    bytes written for it. :class:`SourceMissing` if a source is not installed here.
    """
    arrays: dict[str, NDArray[Any]] = {}
    meta: dict[str, dict[str, Any]] = {}
    for name in names:
        volume = load_source(name)
        meta[name] = {
            "subject": volume.subject,
            "kind": volume.kind,
            "voxel_mm": list(volume.voxel_mm),
            "citation": volume.citation,
            "maps": list(volume.maps),
        }
        for key, value in volume.maps.items():
            arrays[f"{name}/{key}"] = np.asarray(value, dtype=np.float16)
    arrays["meta"] = np.array(json.dumps(meta))
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        np.savez_compressed(f, allow_pickle=False, **arrays)
    sizes: dict[str, int] = {}
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            source = info.filename.split("/", 1)[0]
            if source in meta:
                sizes[source] = sizes.get(source, 0) + info.compress_size
    return sizes


def read_pack(path: Path, names: list[str] | None = None) -> dict[str, SourceVolume]:
    """The sources of a pack (:func:`pack_sources`), all or the named ones it holds, as float32."""
    if not path.is_file():
        raise SourceMissing(f"source pack {path} does not exist (${PACK_ENV})")
    out: dict[str, SourceVolume] = {}
    with np.load(path) as z:
        meta = json.loads(str(z["meta"]))
        for name, info in meta.items():
            if names is not None and name not in names:
                continue
            out[name] = SourceVolume(
                name=name,
                subject=str(info["subject"]),
                kind=info["kind"],
                maps={k: z[f"{name}/{k}"].astype(np.float32) for k in info["maps"]},
                voxel_mm=(
                    float(info["voxel_mm"][0]),
                    float(info["voxel_mm"][1]),
                    float(info["voxel_mm"][2]),
                ),
                citation=str(info["citation"]),
            )
    return out


def available_sources() -> dict[str, str | None]:
    """name → None when loadable cheaply (files present), else the missing-install message."""
    status: dict[str, str | None] = {}
    checks: dict[str, Callable[[], object]] = {
        "icbm152_2009a": lambda: _package_dir("nilearn", INSTALL_PIP),
        "nimare_mni152": lambda: _package_dir("nimare", INSTALL_NODEPS),
        "pydeface_head": lambda: _package_dir("pydeface", INSTALL_NODEPS),
        "spm_tpm": lambda: _package_dir("spm_runtime", INSTALL_NODEPS),
        "spm_avg152": lambda: _package_dir("spm_runtime", INSTALL_NODEPS),
        "odin_brain": lambda: _require(ml_data_dir() / "odin" / "samples" / "brain_128x128.smp"),
    }
    for name, check in checks.items():
        try:
            check()
            status[name] = None
        except SourceMissing as exc:
            status[name] = str(exc)
    return status


def _require(path: Path) -> Path:
    if not path.is_file():
        raise SourceMissing(f"{path} is missing: run `{INSTALL_ODIN}` (needs apt-get)")
    return path
