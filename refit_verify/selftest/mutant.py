"""A mutant swaps one piece of the reference for a wrong variant, everywhere it is referenced.

Patches are keyed "module:attr" (attr may be dotted: "module:Class.method") and map to a factory
`original -> replacement`. Because callers often bind names with `from x import f`, the swap
also rebinds every module attribute (and dict value, e.g. PRESETS) that *is* the original object.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
from dataclasses import dataclass, field
from typing import Callable


# Where a killer runs, by the suite it lives in: "cpu" (this interpreter), "gpu" (needs CUDA),
# "conformance" (needs the real vLLM: this interpreter if it has vllm, else the cached vLLM env).
LANES = {"suites/nightly/": "gpu", "suites/conformance/": "conformance"}


def lane_of(killer: str) -> str:
    for prefix, lane in LANES.items():
        if killer.startswith(prefix):
            return lane
    return "cpu"


@dataclass(frozen=True)
class Mutant:
    name: str
    bug_class: str  # what real bug this models, with its source (docs/FACTS.md section / public issue)
    patches: dict = field(default_factory=dict)  # "module:attr" -> factory(original) -> replacement
    area: str = "fp8"  # the code area it breaks: fp8 | exporter | transport | loader | model | report | ...
    needs: tuple = ()  # optional Python modules its killers need (e.g. "transformers"); skipped without
    # pytest node ids or test files ("suites/pr/test_loader.py::test_x") that must fail, by assertion
    # or a refit-verify error, under this mutant; the self-test runs the mutant against these alone.
    # A killer under suites/nightly runs where CUDA is, one under suites/conformance with the real vLLM.
    killers: tuple = ()

    def lanes(self) -> dict:
        """{lane: [killers]} in declaration order."""
        out: dict = {}
        for k in self.killers:
            out.setdefault(lane_of(k), []).append(k)
        return out

    def missing_needs(self) -> list:
        import importlib.util

        return [n for n in self.needs if importlib.util.find_spec(n) is None]

    @contextlib.contextmanager
    def applied(self):
        undo: list[Callable[[], None]] = []
        try:
            for target, factory in self.patches.items():
                original, setter, restore = _resolve(target)
                replacement = factory(original)
                setter(replacement)
                undo.append(restore)
                undo.extend(_rebind_everywhere(original, replacement))
            yield self
        finally:
            for fn in reversed(undo):
                fn()


def _resolve(target: str):
    module_name, _, attr_path = target.partition(":")
    obj = importlib.import_module(module_name)
    *parents, last = attr_path.split(".")
    for p in parents:
        obj = getattr(obj, p)
    owner = obj
    original = getattr(owner, last)
    return original, (lambda v: setattr(owner, last, v)), (lambda: setattr(owner, last, original))


def _rebind_everywhere(original, replacement) -> list[Callable[[], None]]:
    undo = []
    for mod_name, mod in list(sys.modules.items()):
        if mod is None or not (mod_name.startswith(("refit_verify", "suites", "test_", "conftest"))):
            continue
        for key, value in list(vars(mod).items()):
            if value is original:
                setattr(mod, key, replacement)
                undo.append(lambda m=mod, k=key: setattr(m, k, original))
            elif isinstance(value, dict) and not key.startswith("__"):
                for dk, dv in list(value.items()):
                    if dv is original:
                        value[dk] = replacement
                        undo.append(lambda d=value, k=dk: d.__setitem__(k, original))
    return undo
