"""Every `refit-verify ...` line in README.md, docs/*.md and examples/ names a real subcommand and real flags.

Cheap: nothing runs. Each command line found in inline code, code blocks, the example workflow or the
example quantizer's docstring is checked against the real argparse parsers (the CLI's, and the
selftest/bench parsers it delegates to): every `--flag` must exist on that subcommand, and a concrete
line (no `[...]`, `|` alternatives or CAPITAL placeholders) must parse as written.
"""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ["README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md")),
           *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "examples").rglob("*") if p.suffix in (".py", ".yml"))]
# a command starts its code span or line: optional VAR=value, a path, then the program and a word
PROGRAM = re.compile(r"^(?:[A-Z_]+=\S*\s+)*(?:\S*/)?(?:refit-verify|python3? -m refit_verify)\s+(?=[a-z-])")
PLACEHOLDER = re.compile(r"^[A-Z][A-Z0-9_]*(?:[|.][A-Za-z0-9_]+)*$")  # N, MODULE, NAME|PATH, FILE.toml


def parsers() -> dict:
    """{subcommand: its parser}, the delegated ones included."""
    from refit_verify import cli
    from refit_verify.bench import build_parser as bench_parser
    from refit_verify.selftest.run import build_parser as selftest_parser

    top = cli.build_parser()
    sub = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction))
    return {None: top, **sub.choices, "selftest": selftest_parser(), "bench": bench_parser()}


def command_lines(text: str, fenced_everywhere: bool = False) -> list[str]:
    """The `refit-verify ...` command lines of one file: inline code spans, and lines of code blocks
    (indented continuation lines joined, `# comments` dropped, `a && b` split)."""
    found, in_block, lines = [], fenced_everywhere, text.splitlines()
    for i, line in enumerate(lines):
        if line.lstrip().startswith("```"):
            in_block = not in_block
            continue
        if in_block:
            while i + 1 < len(lines) and lines[i + 1].startswith(" ") and lines[i + 1].lstrip().startswith("["):
                i += 1
                line += " " + lines[i].strip()
            for part in re.split(r"\s&&\s|;\s", line.split(" #")[0]):
                part = re.sub(r"^\s*(?:- )?(?:run:\s*)?", "", part)  # a workflow step's `run: ...`
                found += [part.strip()] if PROGRAM.match(part) else []
        if not in_block or fenced_everywhere:  # prose; a docstring or workflow comment quotes commands too
            found += [span.strip() for span in re.findall(r"`([^`]+)`", line) if PROGRAM.match(span.strip())]
    return found


def problems(line: str, known: dict) -> list[str]:
    """What is wrong with one documented command line ([] when it parses)."""
    rest = PROGRAM.sub("", line, count=1)
    words = rest.replace("[", " ").replace("]", " ").split()
    top = known[None]
    while words and words[0].startswith("-"):  # options before the subcommand (-v)
        if words[0] not in top._option_string_actions:
            return [f"{line!r}: no option {words[0]} before the subcommand"]
        rest = rest.replace(words.pop(0), "", 1)
    command = words[0] if words else ""
    if PLACEHOLDER.match(command):
        return []  # `refit-verify -v COMMAND ...`: about every command
    if command not in known:
        return [f"{line!r}: no subcommand {command!r}"]
    if len(words) == 1:
        return []  # the command named in prose (`refit-verify digest`), or run without options
    parser = known[command]
    flags = {f for f in re.findall(r"(?<![\w-])(--?[a-zA-Z][\w-]*)", rest)}
    out = [f"{line!r}: {command} has no option {f}" for f in sorted(flags) if f not in parser._option_string_actions]
    for path, attr in re.findall(r"(?<!\S)((?:examples|refit_verify)/\S+\.py):(\w+)", rest):  # a file of this repo
        if not (ROOT / path).is_file() or not re.search(rf"^def {attr}\(", (ROOT / path).read_text(), re.M):
            out.append(f"{line!r}: no function {attr} in {path}")
    if out or re.search(r"[\[\]|]|\.\.\.", rest):
        return out  # a synopsis: its flags exist; it is not meant to parse as written
    try:
        tokens = shlex.split(rest)[1:]
    except ValueError as exc:
        return [f"{line!r}: unbalanced quotes ({exc})"]
    if any(PLACEHOLDER.match(t) for t in tokens):
        return out
    try:
        parser.parse_args(tokens)
    except SystemExit:
        out.append(f"{line!r}: does not parse ({command} {' '.join(tokens)})")
    return out


def documented_commands() -> list[tuple[str, str]]:
    out = []
    for rel in SOURCES:
        text = (ROOT / rel).read_text()
        out += [(rel, c) for c in command_lines(text, fenced_everywhere=not rel.endswith(".md"))]
    return out


def test_every_documented_command_line_parses(capsys):
    known = parsers()
    cmds = documented_commands()
    bad = [f"{rel}: {p}" for rel, c in cmds for p in problems(c, known)]
    capsys.readouterr()  # argparse's own complaints on stderr: the list below says it better
    assert not bad, "\n".join(bad)
    seen = {PROGRAM.sub("", c, count=1).split()[0] for _, c in cmds}
    # the extractor must see the docs, not an empty list: every subcommand is documented somewhere
    assert set(known) - {None} <= seen and len(cmds) >= 40, (sorted(seen), len(cmds))


def test_extractor_and_checker_on_a_sample():
    sample = "\n".join([
        "Run `refit-verify run --config tiny-llama --no-plots` or `python -m refit_verify presets`.",
        "```bash",
        "python3 -m venv .venv && .venv/bin/refit-verify run   # first run",
        "refit-verify run [--suite pr|nightly|full] [--device cpu|cuda]",
        "                 [--layers N] [--quiet]",
        "```",
    ])
    lines = command_lines(sample)
    assert lines == ["refit-verify run --config tiny-llama --no-plots", "python -m refit_verify presets",
                     ".venv/bin/refit-verify run",
                     "refit-verify run [--suite pr|nightly|full] [--device cpu|cuda] [--layers N] [--quiet]"], lines
    known = parsers()
    assert all(problems(c, known) == [] for c in lines)
    assert problems("refit-verify run --no-plot", known) == ["'refit-verify run --no-plot': run has no option --no-plot"]
    assert problems("refit-verify run --suite weekly", known)  # a concrete line must parse: bad choice
    assert problems("refit-verify runn --quiet", known)
    assert problems("refit-verify check --quantizer examples/user_quantizer/my_quant.py:good", known) == []
    assert problems("refit-verify check --quantizer examples/user_quantizer/my_quant.py:gone", known)
