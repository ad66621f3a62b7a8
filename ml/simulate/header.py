"""The acquisition header, re-exported where the simulators always found it.

It lives in :mod:`ml.header` so that scoring (``ml.pipeline``, ``ml.model.preprocess``) can read
headers without importing this package, whose simulators pull in SciPy (~0.2 s of a cold
``python -m ml score``)."""

from ml.header import GAMMA_HZ_PER_T, AcquisitionHeader

__all__ = ["GAMMA_HZ_PER_T", "AcquisitionHeader"]
