"""The artifact network: preprocessing, the Keras 3 model, training, pruning, evaluation, export.

Importing ``ml.model`` stays cheap (NumPy only): :mod:`ml.model.preprocess` is pure NumPy; the
modules that build or run the network (:mod:`ml.model.network`, ``train``, ``prune``,
``evaluate``, ``export``) import Keras themselves, after :func:`ml.model.backend.keras` has set the
thread counts.
"""
