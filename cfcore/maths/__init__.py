"""Every model's mathematics, written once on the backend's operations.

The lowest layer above the backend boundary: these modules import only the specs and
`cfcore.backend`, so the trainer, the models and retrieval can all build on them. `functional`
holds the checked, compiled helpers (`sparse_mse(be, ...)`, `fold_in_solve(be, ...)`, ...) that
the bound backend also offers as methods.
"""
