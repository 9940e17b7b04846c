"""The package's floors: each room (a subpackage or top-level module of refit_verify) imports only rooms
on floors below its own. Read by suites/pr/test_layering.py, which parses every import statement
(module level and inside functions alike) with `ast`; docs/ARCHITECTURE.md lists the same order.
"""

from __future__ import annotations

import ast
from pathlib import Path

# Lowest first. The package's own __init__ imports nothing and sits on the ground floor.
FLOORS = (
    ("errors", "__init__"),
    ("cases", "results", "layout", "files"),
    ("fp8", "usercode"),
    ("report", "userworker"),  # userworker: the user's quantizer in a child process (imports usercode)
    ("compare",),
    ("model",),
    ("check", "refit", "fit"),
    ("engine", "live"),
    ("bench",),  # times the kernels, the live digest and NCCL refits
    ("selftest",),
    ("jobs", "runguard"),  # runguard: `run`'s arguments checked before any work, the --out lock
    ("cli", "pytest_plugin", "testing"),
    ("__main__",),
)

PACKAGE = "refit_verify"


def floor_of(floors=None) -> dict:
    return {room: i for i, rooms in enumerate(floors or FLOORS) for room in rooms}


def room_of(path: Path, root: Path) -> str:
    """The room of a source file: its subpackage, or its module name at the package's top."""
    parts = path.relative_to(root).with_suffix("").parts
    return parts[0]


def imported_rooms(tree: ast.AST, rooms: set) -> set:
    """Rooms of refit_verify named by any import statement in `tree` (absolute imports only: the package
    uses no relative ones). A name imported from the package itself that is no room (`__version__`)
    comes from its __init__."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] if node.module != PACKAGE else [f"{PACKAGE}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        heads = {n.split(".")[1] for n in names if n.startswith(PACKAGE + ".")}
        out |= {h if h in rooms else "__init__" for h in heads}
    return out


def import_edges(root: Path) -> dict:
    """{(importing room, imported room): [files]} over every .py file under the package folder `root`."""
    edges: dict = {}
    files = sorted(root.rglob("*.py"))
    rooms = {room_of(p, root) for p in files}
    for path in files:
        src = room_of(path, root)
        for dst in imported_rooms(ast.parse(path.read_text(), str(path)), rooms):
            if dst != src:
                edges.setdefault((src, dst), []).append(str(path.relative_to(root.parent)))
    return edges


def violations(edges: dict, floors=None) -> list[str]:
    """Imports that do not go strictly down, and rooms no floor names."""
    floor = floor_of(floors)
    out = []
    for (src, dst), files in sorted(edges.items()):
        for room in (src, dst):
            if room not in floor:
                out.append(f"{room}: on no floor (add it to refit_verify.selftest.layering.FLOORS)")
        if src in floor and dst in floor and floor[dst] >= floor[src]:
            out.append(f"{src} (floor {floor[src]}) imports {dst} (floor {floor[dst]}) in {files[0]}")
    return sorted(set(out))


def private_accesses(root: Path) -> list[str]:
    """Places where one module of the package reads another module's private name: `from
    refit_verify.x import _name`, or `alias._name` where alias is a refit_verify module imported here.
    (Attributes of objects, e.g. `self._x`, and of other libraries are out of scope.)"""
    out = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        where = str(path.relative_to(root.parent))
        aliases = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith(PACKAGE):
                for a in node.names:
                    if a.name.startswith("_") and not a.name.startswith("__"):
                        out.append(f"{where}:{node.lineno}: imports {node.module}.{a.name}")
                    aliases.add(a.asname or a.name)  # a module or a class: its privates are private too
            elif isinstance(node, ast.Import):
                aliases |= {a.asname for a in node.names if a.name.startswith(PACKAGE + ".") and a.asname}
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases \
                    and node.attr.startswith("_") and not node.attr.startswith("__"):
                out.append(f"{where}:{node.lineno}: reads {node.value.id}.{node.attr}")
    return out
