"""`python -m cfcore.cli`, as the `cfcore` console script."""

from . import main

main()
