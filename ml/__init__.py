"""ArtiScan's machine-learning package: simulate, train, prune, evaluate, export, score.

Importing ``ml`` must stay cheap: it never imports Django, Celery, Channels or TensorFlow.
Submodules that need TensorFlow/Keras import it themselves.
"""

ARTIFACT_TYPES: tuple[str, ...] = (
    "motion",
    "ghosting",
    "aliasing",
    "chemical_shift",
    "susceptibility",
    "zipper",
    "spike",
    "gibbs",
    "bias_field",
    "noise",
)
"""The ten canonical artifact types, in the order used for mask channels everywhere."""
