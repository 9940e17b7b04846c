"""A user's trainer exporter against the reference TrainerExporter (FP8-before mode), tensor by tensor.

The user's callable is `f(state_dict) -> iterable of (name, tensor)`: what their trainer would send
for an FP8-before refit (`name` FP8 + `name_scale_inv` for the weights the engine keeps in FP8, the
rest as is). The reference asks the engine which weights are FP8 (the robust selection) and
quantizes with the engine's recipe, so any difference is one the engine would see.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import torch

from refit_verify.compare import compare_fp8
from refit_verify.refit.exporter import SCALE_SUFFIX, TrainerExporter
from refit_verify.refit.loader import EngineStore
from refit_verify.refit.selection import loader_selection


@dataclass
class ExporterIssue:
    tensor: str
    kind: str  # missing | extra | duplicate | shape | dtype | bytes | raised
    message: str

    def to_dict(self) -> dict:
        return vars(self).copy()


@dataclass
class ExporterCheck:
    config: str
    recipe: str
    n_reference: int
    n_user: int
    n_identical: int
    issues: list[ExporterIssue] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.issues

    @property
    def first(self) -> Optional[ExporterIssue]:
        return self.issues[0] if self.issues else None

    def to_dict(self) -> dict:
        return {"config": self.config, "recipe": self.recipe, "n_reference": self.n_reference, "n_user": self.n_user,
                "n_identical": self.n_identical, "passed": self.passed, "issues": [i.to_dict() for i in self.issues]}


def _bits(t: torch.Tensor) -> torch.Tensor:
    t = t.detach().cpu().contiguous()
    return t.view({1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()])


def check_exporter(fn: Callable, cfg, weights: dict, recipe="vllm_per_block") -> ExporterCheck:
    ref_ex = TrainerExporter(weights, "before", recipe, loader_selection(EngineStore(cfg, recipe=recipe)))
    ref = dict(ref_ex)
    out = ExporterCheck(cfg.name, ref_ex.quantizer_name, len(ref), 0, 0)
    user: dict = {}
    try:
        for name, t in fn({n: w.clone() for n, w in weights.items()}):  # a copy: in-place edits must not leak
            if name in user:
                out.issues.append(ExporterIssue(name, "duplicate", f"{name} yielded twice"))
            user[name] = t
    except Exception as exc:  # the user's code failing is a result, reported like a mismatch
        out.issues.append(ExporterIssue("<exporter>", "raised", f"{type(exc).__name__}: {exc} "
                                        f"(after {len(user)} tensors)"))
    out.n_user = len(user)
    for name in ref:
        if name not in user:
            kind = "scale of " + name[: -len(SCALE_SUFFIX)] if name.endswith(SCALE_SUFFIX) else "tensor"
            out.issues.append(ExporterIssue(name, "missing", f"{kind} {name} expected ({tuple(ref[name].shape)} "
                                            f"{ref[name].dtype}) but never yielded"))
    for name in user:
        if name not in ref:
            out.issues.append(ExporterIssue(name, "extra", f"{name} yielded but the reference exporter sends no such "
                                            "name (the engine would reject or ignore it)"))
    for name in ref:
        if name not in user or name.endswith(SCALE_SUFFIX) and name[: -len(SCALE_SUFFIX)] in ref_ex.fp8_names:
            continue  # scales are compared with their weight (block-level first mismatch)
        issue = _compare(name, ref, user, name in ref_ex.fp8_names)
        if issue:
            out.issues.append(issue)
        else:
            out.n_identical += 1 + (name in ref_ex.fp8_names)
    return out


def shape_dtype_issue(name, r, u) -> Optional[ExporterIssue]:
    if not isinstance(u, torch.Tensor):
        return ExporterIssue(name, "dtype", f"{name}: yielded a {type(u).__name__}, not a tensor")
    if tuple(u.shape) != tuple(r.shape):
        return ExporterIssue(name, "shape", f"{name}: shape {tuple(u.shape)}, reference {tuple(r.shape)}")
    if u.dtype != r.dtype:
        return ExporterIssue(name, "dtype", f"{name}: dtype {u.dtype}, reference {r.dtype}")
    return None


def _compare(name, ref, user, fp8: bool) -> Optional[ExporterIssue]:
    r, u = ref[name], user[name]
    bad = shape_dtype_issue(name, r, u)
    if bad:
        return bad
    if fp8:
        sname = name + SCALE_SUFFIX
        if sname in user:
            bad = shape_dtype_issue(sname, ref[sname], user[sname])
            if bad:
                return bad
            cmp = compare_fp8(r, ref[sname], u.cpu(), user[sname].cpu(), (128, 128), name)
            if not cmp.equal:
                return ExporterIssue(name, "bytes", f"{cmp.n_code_mismatch} codes and {cmp.n_scale_mismatch} scales "
                                     f"differ; {cmp.first_mismatch.describe()}")
            return None
    diff = _bits(r) != _bits(u)
    if bool(diff.any()):
        idx = tuple(int(v) for v in diff.nonzero()[0])
        return ExporterIssue(name, "bytes", f"{int(diff.sum())} of {r.numel()} elements differ bitwise; first at "
                             f"{list(idx)}: {float(u[idx])!r}, reference {float(r[idx])!r}")
    return None
