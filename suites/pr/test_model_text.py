"""Real text on the GGUF model: tokenizer and chat template from the file, greedy text, both refit paths."""

from __future__ import annotations

import os

import pytest
import torch

from refit_verify.errors import BadInputError
from refit_verify.model.logits import first_divergence, greedy_tokens
from refit_verify.model.text import PROMPTS


def _path():
    from refit_verify.model.gguf import resolve_gguf

    try:
        return resolve_gguf("smollm2-135m")
    except BadInputError as e:  # offline and not cached
        if os.environ.get("CI"):
            raise
        pytest.skip(str(e))


def test_first_divergence():
    assert first_divergence([1, 2, 3], [1, 2, 3]) is None
    assert first_divergence([1, 2, 3], [1, 5, 3]) == 1
    assert first_divergence([1, 2], [1, 2, 3]) == 2  # one stopped (EOS) earlier


def test_tokenizer_and_chat_template_match_transformers():
    transformers = pytest.importorskip("transformers")
    from refit_verify.model.text import load_tokenizer

    p = _path()
    ours = load_tokenizer(p)
    ref = transformers.AutoTokenizer.from_pretrained(str(p.parent), gguf_file=p.name)
    for user in PROMPTS:
        text = ref.apply_chat_template([{"role": "user", "content": user}], tokenize=False, add_generation_prompt=True)
        assert ours.chat_prompt(user) == text, "ChatML rendering differs from the file's Jinja template"
        assert ours.encode(text) == ref.encode(text, add_special_tokens=False), user
    for s in ("In 1987, 12345 people paid $3.50 each!", " two  spaces\n\nand lines", "naïve café"):
        assert ours.encode(s) == ref.encode(s, add_special_tokens=False), s
        assert ours.decode(ours.encode(s)) == s


@pytest.fixture(scope="module")
def smollm_refit():
    from refit_verify.model.gguf import load_gguf_cached
    from refit_verify.refit.run import run_refit

    cfg, w = load_gguf_cached(_path(), "smollm2-135m", layers=2)
    return cfg, w, run_refit(cfg, w, placement="exact")


def test_both_paths_identical_bytes_identical_logits_and_text(smollm_refit):
    """SmolLM2 (2 layers), exact placement: FP8-before and FP8-after leave the same bytes, so the same
    logits and the same greedy text; and the FP8 model is still the BF16 model (not a broken one)."""
    from refit_verify.model.llama import LlamaModel
    from refit_verify.model.text import load_tokenizer

    cfg, w, r = smollm_refit
    assert r.paths["before"].completed and r.paths["after"].completed
    assert r.bitwise_equal, [c.tensor for c in r.comparisons if not c.equal][:5]
    tok = load_tokenizer(_path())
    ids = tok.encode(tok.chat_prompt(PROMPTS[0]))
    before, after = (LlamaModel(cfg, r.stores[p].parameters()) for p in ("before", "after"))
    la, lb = before.logits(torch.tensor([ids])), after.logits(torch.tensor([ids]))
    assert torch.equal(la, lb), "identical engine bytes, different logits"
    assert greedy_tokens(before, ids, 6) == greedy_tokens(after, ids, 6)
    ref = LlamaModel(cfg, w).logits(torch.tensor([ids]))
    cos = torch.nn.functional.cosine_similarity(ref.flatten().double(), la.flatten().double(), 0).item()
    assert cos > 0.99, f"FP8 engine logits cosine {cos:.4f} vs BF16: the engine's scales are wrong"
