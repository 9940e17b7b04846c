"""The report's git commit is the project's own checkout, whatever the working directory, or absent."""

import shutil
import subprocess
from pathlib import Path

import pytest

import refit_verify
from refit_verify.report.env import project_git_commit

PKG = Path(refit_verify.__file__).resolve().parent
pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git not installed")


def _git(folder, *args):
    return subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True, check=True).stdout.strip()


def _repo(folder: Path) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    _git(folder, "init", "-q")
    (folder / "f.txt").write_text("x")
    _git(folder, "add", "f.txt")
    _git(folder, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "other project")
    return _git(folder, "rev-parse", "HEAD")


def test_commit_is_the_checkout_holding_the_package_not_the_cwd(tmp_path, monkeypatch):
    other = _repo(tmp_path / "user_project")
    monkeypatch.chdir(tmp_path / "user_project")
    got = project_git_commit()
    assert got != other
    top = subprocess.run(["git", "-C", str(PKG.parent), "rev-parse", "--show-toplevel"], capture_output=True,
                         text=True)
    if top.returncode == 0 and Path(top.stdout.strip()).resolve() == PKG.parent:
        assert got == _git(PKG.parent, "rev-parse", "HEAD")
    else:  # an installed copy: no commit of its own
        assert got is None


def test_installed_copy_inside_another_repository_has_no_commit(tmp_path, monkeypatch):
    _repo(tmp_path / "project")
    site = tmp_path / "project" / "venv" / "site-packages" / "refit_verify"
    site.mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "project")
    assert project_git_commit(site) is None
    assert project_git_commit(tmp_path / "not_a_repo" / "refit_verify") is None
