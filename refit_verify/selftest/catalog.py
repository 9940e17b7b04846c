"""All mutants, gathered from the mutants_<area>.py modules."""

from __future__ import annotations

import importlib
import pkgutil

from refit_verify.errors import BadInputError


def all_mutants() -> list:
    import refit_verify.selftest as pkg

    out = []
    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda i: i.name):
        if info.name.startswith("mutants_"):
            out.extend(importlib.import_module(f"{pkg.__name__}.{info.name}").MUTANTS)
    names = [m.name for m in out]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise BadInputError(f"duplicate mutant names: {sorted(dupes)}")
    return out


def get_mutant(name: str):
    for m in all_mutants():
        if m.name == name:
            return m
    raise BadInputError(f"unknown mutant {name!r}; known: {', '.join(m.name for m in all_mutants())}")
