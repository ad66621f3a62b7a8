"""Sub-commands of ``python -m ml`` (one module each; see ``ml/__main__.py``)."""
