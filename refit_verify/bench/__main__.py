"""python -m refit_verify.bench"""
import sys

from refit_verify.bench import main

sys.exit(main())
