"""The `refit-verify` command line (front door for the PR gate, nightly runs and drift reports)."""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="refit-verify", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("presets", help="list the named quantizer recipes")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "presets":
        from refit_verify.fp8 import PRESETS

        for name, r in PRESETS.items():
            print(f"{name:32s} {r.source}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
