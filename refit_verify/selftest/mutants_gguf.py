"""GGUF model-source mutants: real ways a llama.cpp checkpoint is loaded wrong."""

from __future__ import annotations

from refit_verify.selftest.mutant import Mutant

G = "refit_verify.model.gguf"
T = "suites/pr/test_model_gguf.py"


def _no_unpermute(original):
    # q/k rows left in llama.cpp's interleaved RoPE order (HF half-split RoPE then rotates wrong pairs)
    return lambda w, n_head: w


def _unpermute_by_q_heads(original):
    # k un-permuted with the q head count of a GQA group of 4 (Llama-3-8B: 32 q heads, 8 kv heads): the
    # rows still divide, so the weights come out silently wrong (a count that does not divide would
    # merely crash the reshape: no kill)
    def unpermute_qk(w, n_head):
        wrong = 4 * n_head
        return original(w, wrong if w.shape[0] % (2 * wrong) == 0 else n_head)
    return unpermute_qk


def _untied_guess(original):
    # config built without the file's tie: an lm_head is expected that the file does not have
    def gguf_config(reader, name):
        import dataclasses

        return dataclasses.replace(original(reader, name), tie_word_embeddings=False)
    return gguf_config


MUTANTS = [
    Mutant("gguf_qk_not_unpermuted", "llama.cpp q/k row permutation not undone (llama.cpp convert_hf_to_gguf "
           "permutes q/k rows for its interleaved RoPE)", {f"{G}:unpermute_qk": _no_unpermute}, "model",
           killers=(f"{T}::test_unpermute_inverts_llamacpp_permute",)),
    Mutant("gguf_k_unpermuted_with_q_heads", "k rows un-permuted with the q head count under GQA",
           {f"{G}:unpermute_qk": _unpermute_by_q_heads}, "model",
           killers=(f"{T}::test_unpermute_inverts_llamacpp_permute",)),
    Mutant("gguf_tie_ignored", "tied embeddings not read from the file (lm_head expected)",
           {f"{G}:gguf_config": _untied_guess}, "model", killers=(f"{T}::test_config_read_from_file",)),
]
