"""Recipes users write: a TOML file naming every field, or `PRESET:field=value,...` overrides.

TOML has no null, so an absent optional value (amax_floor, scale_min) is written as the string "none".
Every field must be named in a file (a recipe is every choice, explicitly); an unknown or missing
field, or a value outside the field's choices, is a BadInputError naming the field.
"""

from __future__ import annotations

import dataclasses
import os
import typing

from refit_verify.errors import BadInputError
from refit_verify.fp8.recipe import Recipe

_HINTS = typing.get_type_hints(Recipe)
FIELDS = [f.name for f in dataclasses.fields(Recipe)]
_OPTIONAL_FIELDS = {"source"}  # provenance, not a choice: may be left out of a file


def _choices(field: str):
    hint = _HINTS[field]
    args = typing.get_args(hint)
    if typing.get_origin(hint) is typing.Literal:
        return args
    return None


def _toml_value(v) -> str:
    if v is None:
        return '"none"'
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, tuple):
        return "[" + ", ".join(str(x) for x in v) + "]"
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, int):
        return str(v)
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


def recipe_to_toml(r: Recipe) -> str:
    lines = [f"# refit-verify recipe: every field named ({len(FIELDS)}); \"none\" means no value"]
    lines += [f"{name} = {_toml_value(getattr(r, name))}" for name in FIELDS]
    return "\n".join(lines) + "\n"


def _coerce(field: str, value, where: str):
    """A TOML/override value checked against the field's type; errors name the field."""
    hint = _HINTS[field]
    choices = _choices(field)
    optional = type(None) in typing.get_args(hint)

    def bad(why):
        raise BadInputError(f"{where}: field {field!r}: {why}")

    if optional and (value is None or (isinstance(value, str) and value.lower() == "none")):
        return None
    if choices is not None:
        if value not in choices:
            bad(f"{value!r} is not one of {', '.join(map(repr, choices))}")
        return value
    if field == "block":
        if isinstance(value, str) and "x" in value:
            value = value.split("x")
        if not (isinstance(value, (list, tuple)) and len(value) == 2):
            bad(f"expected two block sizes like [128, 128], got {value!r}")
        try:
            return tuple(int(v) for v in value)
        except (TypeError, ValueError):
            bad(f"expected integers, got {value!r}")
    if hint is bool:
        if not isinstance(value, bool):
            bad(f"expected true or false, got {value!r}")
        return value
    if hint is str:
        return str(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        bad("expected a number" + (' or "none"' if optional else "") + f", got {value!r}")
    return float(value)


def recipe_from_mapping(data: dict, where: str) -> Recipe:
    unknown = [k for k in data if k not in FIELDS]
    if unknown:
        raise BadInputError(f"{where}: unknown field(s) {', '.join(map(repr, unknown))}; fields: {', '.join(FIELDS)}")
    missing = [k for k in FIELDS if k not in data and k not in _OPTIONAL_FIELDS]
    if missing:
        raise BadInputError(f"{where}: missing field(s) {', '.join(map(repr, missing))} (a recipe file names "
                            f"every field; `refit-verify presets --show NAME` prints a complete one)")
    values = {k: _coerce(k, v, where) for k, v in data.items()}
    return Recipe(**values)


def load_recipe_file(path: str) -> Recipe:
    import tomllib

    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise BadInputError(f"cannot read recipe file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise BadInputError(f"recipe file {path} is not valid TOML: {exc}") from None
    return recipe_from_mapping(data, path)


def _parse_scalar(text: str):
    t = text.strip()
    if t.lower() in ("true", "false"):
        return t.lower() == "true"
    if t.lower() == "none":
        return None
    try:
        return int(t)
    except ValueError:
        pass
    try:
        return float(t)
    except ValueError:
        return t


def apply_overrides(base: Recipe, spec: str, overrides: str) -> Recipe:
    """`field=value,field=value` on top of a preset; the result is named by the whole spec."""
    changes = {}
    for item in filter(None, (p.strip() for p in overrides.split(","))):
        field, sep, value = item.partition("=")
        field = field.strip()
        if not sep:
            raise BadInputError(f"{spec}: expected field=value, got {item!r}")
        if field not in FIELDS or field in ("name", "source"):
            raise BadInputError(f"{spec}: unknown field {field!r}; fields: {', '.join(FIELDS[1:-1])}")
        changes[field] = _coerce(field, _parse_scalar(value), spec)
    return base.replace(name=spec, **changes)


def resolve_recipe_spec(spec: str, lookup) -> Recipe:
    """A preset name (via `lookup`), a .toml file, or PRESET:field=value,..."""
    if spec.endswith(".toml") or "/" in spec or os.path.sep in spec:
        return load_recipe_file(spec)
    name, sep, overrides = spec.partition(":")
    if sep:
        return apply_overrides(lookup(name), spec, overrides)
    return lookup(name)
