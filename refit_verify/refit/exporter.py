"""Trainer-side export: HF-named BF16 weights -> the (name, tensor) stream a refit sends.

FP8-before: each selected weight goes out as `name` (float8_e4m3fn) then `name + "_scale_inv"`
(float32 [ceil(M/128), ceil(N/128)]). FP8-after: everything goes out as it is (BF16).
Metadata `{name: (shape, dtype)}` is computed from shapes alone, before any tensor is produced,
as the transport needs it first (FACTS.md §5).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Optional, Union

import torch

from refit_verify.errors import BadInputError
from refit_verify.fp8 import get_recipe, quantize
from refit_verify.fp8.recipe import Recipe
from refit_verify.refit.selection import Fp8Selection, heuristic_selection

SCALE_SUFFIX = "_scale_inv"
Quantizer = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
Metadata = dict  # {name: (shape tuple, torch.dtype)}


def sendable(t: torch.Tensor, make_contiguous: bool = True) -> torch.Tensor:
    """What goes on the wire must be contiguous: recipes that crop a padded result return views.

    make_contiguous=False reproduces an exporter that forgets it (the packed transport then refuses).
    """
    return t.contiguous() if make_contiguous else t


def scale_shape(shape, block=(128, 128)) -> tuple[int, int]:
    return (math.ceil(shape[0] / block[0]), math.ceil(shape[1] / block[1]))


def metadata_to_dict(metadata: Metadata) -> dict:
    return {n: [list(s), str(d).replace("torch.", "")] for n, (s, d) in metadata.items()}


@dataclass(frozen=True)
class ExportSummary:
    mode: str
    quantizer: str
    selection: dict
    fp8_names: tuple[str, ...]
    n_tensors: int
    payload_bytes: int

    def to_dict(self) -> dict:
        return {"mode": self.mode, "quantizer": self.quantizer, "selection": self.selection,
                "fp8_names": list(self.fp8_names), "n_tensors": self.n_tensors, "payload_bytes": self.payload_bytes}


class TrainerExporter:
    """Iterate it for the (name, tensor) stream; `metadata()` first, as a refit does."""

    def __init__(self, weights: Union[Mapping, Iterable, Callable[[], Iterable]], mode: str = "before",
                 quantizer: Union[str, Recipe, Quantizer] = "vllm_per_block",
                 selection: Optional[Fp8Selection] = None, block=(128, 128), make_contiguous: bool = True):
        if mode not in ("before", "after"):
            raise BadInputError(f"export mode must be 'before' or 'after', got {mode!r}")
        self.mode = mode
        self.block = tuple(block)
        self.make_contiguous = make_contiguous
        self._weights = self._rewindable(weights)
        self.selection = selection or heuristic_selection()
        if callable(quantizer) and not isinstance(quantizer, (str, Recipe)):
            self._quantize = lambda w, name=None, f=quantizer: f(w)
            self.quantizer_name = getattr(quantizer, "__name__", "callable")
        else:
            recipe = get_recipe(quantizer)
            self._quantize = lambda w, name=None, r=recipe: _recipe_quantizer(w, r, name)
            self.quantizer_name = recipe.name
        shapes = {n: tuple(t.shape) for n, t in self._iter_source()}
        self.fp8_names = self.selection.select(shapes) if mode == "before" else set()
        self._metadata = self._build_metadata()

    @staticmethod
    def _rewindable(weights):
        if isinstance(weights, Mapping):
            return lambda: iter(weights.items())
        if callable(weights):
            return weights
        items = list(weights)  # a one-shot iterator: metadata needs a first pass
        return lambda: iter(items)

    def _iter_source(self) -> Iterator[tuple[str, torch.Tensor]]:
        yield from self._weights()

    def _build_metadata(self) -> Metadata:
        meta: Metadata = {}
        for name, t in self._iter_source():
            if name in self.fp8_names:
                meta[name] = (tuple(t.shape), torch.float8_e4m3fn)
                meta[name + SCALE_SUFFIX] = (scale_shape(t.shape, self.block), torch.float32)
            else:
                meta[name] = (tuple(t.shape), t.dtype)
        return meta

    def metadata(self) -> Metadata:
        return dict(self._metadata)

    def __iter__(self) -> Iterator[tuple[str, torch.Tensor]]:
        for name, t in self._iter_source():
            if name not in self.fp8_names:
                yield name, sendable(t, self.make_contiguous)
                continue
            data, scale_inv = self._quantize(t, name=name)
            if scale_inv.dim() == 3 and scale_inv.shape[-1] == 1:  # NeMo-RL returns [Mb, Nb, 1]
                scale_inv = scale_inv.squeeze(-1)
            self._check_against_metadata(name, data, scale_inv)
            yield name, sendable(data, self.make_contiguous)
            yield name + SCALE_SUFFIX, sendable(scale_inv, self.make_contiguous)

    def _check_against_metadata(self, name, data, scale_inv) -> None:
        # A user quantizer must produce what the metadata promised the receiver.
        for n, t in ((name, data), (name + SCALE_SUFFIX, scale_inv)):
            shape, dtype = self._metadata[n]
            if tuple(t.shape) != tuple(shape) or t.dtype != dtype:
                raise BadInputError(f"quantizer produced {tuple(t.shape)} {t.dtype}, metadata says {shape} {dtype}", n)

    def summary(self) -> ExportSummary:
        payload = sum(math.prod(s) * torch.empty(0, dtype=d).element_size() for s, d in self._metadata.values())
        return ExportSummary(self.mode, self.quantizer_name, self.selection.to_dict(), tuple(sorted(self.fp8_names)),
                             len(self._metadata), int(payload))


def _recipe_quantizer(w: torch.Tensor, recipe: Recipe, name=None):
    q = quantize(w, recipe, name=name)
    return q.data, q.scale_inv


def export_weights(weights, mode="before", quantizer="vllm_per_block", selection=None, block=(128, 128)):
    """(metadata, iterator of (name, tensor)) in one call."""
    ex = TrainerExporter(weights, mode, quantizer, selection, block)
    return ex.metadata(), iter(ex)
