"""refit-verify: test and verification harness for FP8 weight refit in RL training."""

__version__ = "0.1.0"
