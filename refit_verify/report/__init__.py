"""Reports (json/md/html), the drift diff of two FP8 state dicts, policy gating.

Import the submodules directly; this package imports nothing heavy so the CLI starts fast.
"""

SCHEMA = "refit-verify/report@1"
