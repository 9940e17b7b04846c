"""`python -m refit_verify ...` is the `refit-verify` console script."""

import sys

from refit_verify.cli import main

sys.exit(main())
