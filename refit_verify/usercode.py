"""Load a user's callable from "MODULE:ATTR" where MODULE is a dotted path or path/to/file.py."""

from __future__ import annotations

import importlib
import importlib.util
import json
import linecache
import os
import sys
import traceback
from pathlib import Path

from refit_verify.errors import BadInputError


class UserCodeError(BadInputError):
    """Importing or calling the user's code failed; the message says where, without a traceback."""


def load_callable(spec: str, kwargs_json: str | None = None):
    if ":" not in spec:
        raise UserCodeError(f"{spec!r}: expected MODULE:ATTR (e.g. mypkg.quant:quantize or path/to/q.py:quantize)")
    mod_part, attr = spec.rsplit(":", 1)
    # rsplit keeps Windows drive letters (C:\x.py:f) in mod_part
    try:
        if mod_part.endswith(".py") or "/" in mod_part or "\\" in mod_part:
            path = Path(mod_part)
            if not path.exists():
                raise UserCodeError(f"{spec}: file {path} not found")
            if path.is_dir():
                raise UserCodeError(f"{spec}: {path} is a folder; give path/to/file.py:FUNCTION, or the package "
                                    "as a dotted module (mypkg.quant:FUNCTION) with its parent on PYTHONPATH")
            if not path.is_file():
                raise UserCodeError(f"{spec}: {path} is not a regular file")
            name = f"_refit_user_{path.stem}"
            loader_spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(loader_spec)
            sys.modules[name] = module  # dataclasses and pickling look the module up by name
            sys.path.insert(0, str(path.parent.resolve()))  # sibling imports of the user's file
            loader_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(mod_part)
    except UserCodeError:
        raise
    except (Exception, SystemExit, KeyboardInterrupt) as exc:  # user code may exit or ^C at import
        raise UserCodeError(f"{spec}: importing {mod_part} failed: {describe_exit(exc)}") from exc
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise UserCodeError(f"{spec}: {mod_part} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise UserCodeError(f"{spec}: {attr} is a {type(obj).__name__}, not a callable")
    kwargs = parse_kwargs(kwargs_json)
    return as_pair_fn(obj, kwargs)


def parse_kwargs(kwargs_json: str | None) -> dict:
    if not kwargs_json:
        return {}
    try:
        kw = json.loads(kwargs_json)
    except json.JSONDecodeError as exc:
        raise UserCodeError(f"--kwargs is not valid JSON: {exc}") from None
    if not isinstance(kw, dict):
        raise UserCodeError(f"--kwargs must be a JSON object, got {type(kw).__name__}")
    return kw


class UserExit(Exception):
    """The user's code raised SystemExit/KeyboardInterrupt; an Exception so per-case guards catch it."""


def describe_exit(exc: BaseException) -> str:
    if isinstance(exc, SystemExit):
        return f"SystemExit({exc.code!r}) (user code called sys.exit)"
    return f"{type(exc).__name__}: {exc}"


_OURS = os.path.dirname(os.path.abspath(__file__)) + os.sep


def _user_frame(exc: BaseException):
    """The innermost traceback frame outside refit_verify and torch: where the user's code failed."""
    frames = traceback.extract_tb(exc.__traceback__)
    torch_dir = os.sep + "torch" + os.sep
    theirs = [f for f in frames if not os.path.abspath(f.filename).startswith(_OURS) and torch_dir not in f.filename]
    return (theirs or frames or [None])[-1]


def describe_user_exception(exc: BaseException) -> str:
    """`AssertionError at my_quant.py:12: assert w.dim() == 3`: type, message, file:line, source line."""
    if getattr(exc, "description", None):  # described where it happened (the isolated child)
        return exc.description
    if isinstance(exc, UserExit) and exc.__cause__ is not None:
        exc = exc.__cause__
    text = describe_exit(exc) if isinstance(exc, (SystemExit, KeyboardInterrupt)) else (
        f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
    frame = _user_frame(exc)
    if frame is None:
        return text
    line = (frame.line or linecache.getline(frame.filename, frame.lineno)).strip()
    return f"{text} at {frame.filename}:{frame.lineno}" + (f": {line}" if line else "")


def call_user(fn, *args, **kwargs):
    """Call user code; SystemExit and KeyboardInterrupt become UserExit, a case error, never our exit."""
    try:
        return fn(*args, **kwargs)
    except (SystemExit, KeyboardInterrupt) as exc:
        raise UserExit(describe_exit(exc)) from exc


def as_pair_fn(fn, kwargs: dict):
    """f(w) -> (fp8, scale_inv); also accepts objects with .data/.scale_inv (refit_verify's QuantizedTensor)."""

    def quantizer(w):
        out = call_user(fn, w, **kwargs)
        if hasattr(out, "data") and hasattr(out, "scale_inv") and not isinstance(out, tuple):
            return out.data, out.scale_inv
        return out

    quantizer.__name__ = getattr(fn, "__name__", "quantizer")
    quantizer.__wrapped__ = fn
    return quantizer
