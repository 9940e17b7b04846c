"""`run`'s command line checked before any work starts, and its --out folder held by one run at a time.

Every problem is a BadInputError (exit 2) naming the option and the file or key, raised in seconds
rather than after the suite ran for a minute on a model it could not read.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from refit_verify.errors import BadInputError

# every key a job reads from --set; a typo (trainer_recipie=...) must not be ignored silently
SET_KEYS = {
    "trainer_recipe": "recipe the trainer quantizes with (FP8-before)",
    "engine_recipe": "recipe the engine quantizes with (FP8-after)",
    "prompts": "number of prompts of the logits jobs",
    "prompt_len": "prompt length of the logits jobs",
    "greedy_steps": "greedy decoding steps of the logits jobs",
    "full_metrics": "auto | 0 | 1: per-tensor error metrics in refit_pipeline",
    "whatif": "0 disables the what-if recipe comparison",
    "dump_dir": "folder for both engine stores as safetensors (for `refit-verify diff`)",
    "hazard_scenarios": "comma-separated scenario names of the hazard job",
    "placement": "auto | vllm | exact: scale placement of fused shards in refit_pipeline",
    "text": "0 skips the real-text prompts of logits_drift",
    "trainer_quant": "after_gather | before_gather | both: when the sharded trainer quantizes",
    "stage_names": "global | local: layer names pipeline stages export (sharded_refit)",
    "invariants": "0 skips sharded_refit's A->B->A and storage-identity checks",
    "patched_loader": "1: vllm_refit loads FP8-after through a quantize-on-load loader (NeMo-RL's patch)",
}
RECIPE_KEYS = ("trainer_recipe", "engine_recipe")
INT_KEYS = ("prompts", "prompt_len", "greedy_steps")


def parse_set(pairs: list[str]) -> dict:
    options = {}
    for kv in pairs:
        if "=" not in kv:
            raise BadInputError(f"--set expects KEY=VALUE, got {kv!r}")
        k, v = kv.split("=", 1)
        if k not in SET_KEYS:
            import difflib

            near = difflib.get_close_matches(k, SET_KEYS, n=1)
            raise BadInputError(f"--set {k}: unknown key" + (f" (did you mean {near[0]}?)" if near else "")
                                + f"; known: {', '.join(sorted(SET_KEYS))}")
        if k in INT_KEYS and not (v.isdigit() and int(v) > 0):
            raise BadInputError(f"--set {k}={v}: expected a positive integer")
        options[k] = v
    return options


def check_cheap(args) -> dict:
    """Checks that need no imports beyond the standard library; returns the --set options."""
    if args.layers is not None and args.layers < 1:
        raise BadInputError(f"--layers {args.layers}: must be at least 1 (the number of decoder layers to keep)")
    if args.out and os.path.lexists(args.out) and not os.path.isdir(args.out):
        raise BadInputError(f"--out {args.out}: exists and is not a folder")
    return parse_set(args.set)


def check_model(args, options: dict) -> None:
    """--model / --config / recipe values: readable and well-formed, each problem naming its file."""
    from refit_verify.fp8 import get_recipe

    for k in RECIPE_KEYS:
        if k in options:
            get_recipe(options[k])  # BadInputError listing the presets
    if not args.model:
        from refit_verify.model import load_config

        load_config(args.config)
        return
    from refit_verify.model.gguf import resolve_gguf

    gguf = resolve_gguf(args.model)
    if gguf is not None:
        _check_file(gguf, "--model", magic=b"GGUF")
        return
    p = Path(args.model)
    if not p.exists():
        raise BadInputError(f"--model {p}: no such file or folder")
    if p.is_dir() or p.suffix == ".safetensors":
        shards = sorted(p.glob("*.safetensors")) if p.is_dir() else [p]
        for f in shards:
            _check_safetensors(f)
        if p.is_dir():
            _check_config_json(p / "config.json", required=bool(shards))
        return
    _check_config_json(p, required=True)


def _check_file(p: Path, option: str, magic: bytes = b"") -> None:
    if not p.is_file():
        raise BadInputError(f"{option} {p}: not a regular file")
    if magic:
        with open(p, "rb") as f:
            if f.read(len(magic)) != magic:
                raise BadInputError(f"{option} {p}: not a {magic.decode()} file (corrupt or another format)")


def _check_safetensors(f: Path) -> None:
    from refit_verify.compare.statedict import refusal

    why = refusal(f)
    if why:
        raise BadInputError(f"--model {f}: {why}")
    try:
        from safetensors import safe_open

        with safe_open(str(f), framework="pt") as h:
            list(h.keys())
    except Exception as exc:  # safetensors raises its own types for a corrupt header
        raise BadInputError(f"--model {f}: unreadable safetensors file: {type(exc).__name__}: {exc}") from None


def _check_config_json(cj: Path, required: bool) -> None:
    if not cj.exists():
        if required:
            raise BadInputError(f"--model {cj}: missing (the model folder needs its config.json)")
        raise BadInputError(f"--model {cj.parent}: folder holds neither *.safetensors nor config.json")
    try:
        raw = json.loads(cj.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BadInputError(f"--model {cj}: not readable JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise BadInputError(f"--model {cj}: expected a JSON object, got {type(raw).__name__}")
    from refit_verify.model.config import from_dict

    try:
        from_dict(raw, cj.stem)
    except KeyError as exc:
        raise BadInputError(f"--model {cj}: missing key {exc}") from None
    except (TypeError, ValueError, ZeroDivisionError) as exc:
        raise BadInputError(f"--model {cj}: {type(exc).__name__}: {exc}") from None


class OutLock:
    """`OUT/.refit-verify.lock` holds the pid of the run writing OUT; a second run is refused while that
    process lives (a lock left by a dead process is taken over)."""

    def __init__(self, out: str):
        self.path = Path(out) / ".refit-verify.lock"
        self.held = False

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                pid = self._owner()
                if pid and _alive(pid):
                    raise BadInputError(f"--out {self.path.parent}: another run (pid {pid}) is writing this folder; "
                                        "wait for it or choose another --out") from None
                self.path.unlink(missing_ok=True)  # stale: its run is gone
                continue
            with os.fdopen(fd, "w") as f:
                f.write(str(os.getpid()))
            self.held = True
            return self
        raise BadInputError(f"--out {self.path.parent}: could not take the lock {self.path}")

    def _owner(self) -> int:
        try:
            return int(self.path.read_text().strip() or 0)
        except (OSError, ValueError):
            return 0

    def __exit__(self, *exc):
        if self.held and self._owner() == os.getpid():
            self.path.unlink(missing_ok=True)
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
