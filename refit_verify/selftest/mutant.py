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


@dataclass(frozen=True)
class Mutant:
    name: str
    bug_class: str  # what real bug this models, with its source (docs/FACTS.md section / public issue)
    patches: dict = field(default_factory=dict)  # "module:attr" -> factory(original) -> replacement
    area: str = "fp8"  # fp8 | exporter | transport | loader | model
    needs: tuple = ()  # "cuda" / "vllm": killed only by suites that run where those exist
    # pytest node ids or test files ("suites/pr/test_loader.py::test_x") that must fail, by assertion
    # or a refit-verify error, under this mutant; CI runs the mutant against these alone
    killers: tuple = ()

    def runnable_here(self) -> tuple[bool, str]:
        for need in self.needs:
            if need == "cuda":
                import torch

                if not torch.cuda.is_available():
                    return False, "needs cuda"
            elif need == "vllm":
                import importlib.util

                if importlib.util.find_spec("vllm") is None:
                    return False, "needs vllm"
        return True, ""

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
