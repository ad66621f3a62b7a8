"""The one place that imports Keras: thread counts are set before the first op."""

from __future__ import annotations

import os
from typing import Any

_CONFIGURED = False


def keras(threads: int = 2) -> Any:
    """Import and return the ``keras`` module, configured once per process.

    On the TensorFlow backend (the default here) intra-op threads are set to ``threads`` (2 on
    the project's CPU machines) and inter-op to 1 before any op runs, and TensorFlow's C++
    logging is quietened. Other backends (JAX, PyTorch) are left as they are.
    """
    global _CONFIGURED
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import keras as keras_module

    if not _CONFIGURED:
        if keras_module.backend.backend() == "tensorflow":
            import tensorflow as tf

            try:
                tf.config.threading.set_intra_op_parallelism_threads(threads)
                tf.config.threading.set_inter_op_parallelism_threads(1)
            except RuntimeError:
                pass  # TensorFlow was already initialised by the caller: keep its settings
        _CONFIGURED = True
    return keras_module
