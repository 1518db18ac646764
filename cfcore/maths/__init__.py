"""Every model's mathematics, written once on the backend's operations.

The lowest layer above the backend boundary: these modules import only the specs, so the bound
backend (`cfcore.backend.bound`), the trainer, the models and retrieval can all build on them.
"""
