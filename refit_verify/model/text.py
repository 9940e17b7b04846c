"""Real text for a GGUF model: its tokenizer and chat template, read from the same file as the weights.

The tokenizer is rebuilt with `tokenizers` from the file's `tokenizer.ggml.*` metadata (byte-level BPE:
vocabulary, merges, control tokens) and kept in the cache next to the dequantized weights (parsing the
metadata arrays costs ~10 s; the cached JSON loads in well under a second). SmolLM2's pre-tokenizer
("smollm" in llama.cpp) splits digits one by one before the GPT-2 byte-level split. The chat template is
ChatML, rendered here directly (the file's Jinja template is kept and tested against transformers').
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from refit_verify.errors import BadInputError

# A few fixed user prompts: short, varied, answerable by a 135M instruct model.
PROMPTS = (
    "What is the capital of France?",
    "Write a short poem about the sea.",
    "Explain what a CPU does in one sentence.",
    "Give me three tips for staying healthy.",
)
CONTROL = 3  # llama.cpp token type of control tokens (<|im_start|>, <|endoftext|>, ...)


@dataclass
class ChatTokenizer:
    tokenizer: object  # tokenizers.Tokenizer
    eos_id: int
    chat_template: str
    system: str = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"

    def chat_prompt(self, user: str) -> str:
        """ChatML with the template's default system turn and the assistant turn opened."""
        return (f"<|im_start|>system\n{self.system}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n"
                f"<|im_start|>assistant\n")

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids) -> str:
        return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=False)


def _build(meta: dict):
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    if meta["model"] != "gpt2":
        raise BadInputError(f"GGUF tokenizer model {meta['model']!r}: only byte-level BPE (gpt2) is supported")
    vocab = {t: i for i, t in enumerate(meta["tokens"])}
    merges = [tuple(m.split(" ", 1)) for m in meta["merges"]]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(meta["tokens"][i], special=True, normalized=False)
                            for i, t in enumerate(meta["token_type"]) if t == CONTROL])
    return tok


def _read_meta(path: Path) -> dict:
    from gguf import GGUFReader

    r = GGUFReader(str(path))
    get = lambda k, d=None: r.fields[k].contents() if k in r.fields else d  # noqa: E731
    return {"model": get("tokenizer.ggml.model"), "pre": get("tokenizer.ggml.pre"),
            "tokens": get("tokenizer.ggml.tokens"), "merges": get("tokenizer.ggml.merges"),
            "token_type": get("tokenizer.ggml.token_type"), "eos_id": int(get("tokenizer.ggml.eos_token_id", 0)),
            "chat_template": get("tokenizer.chat_template", "")}


def load_tokenizer(gguf_path: str | Path) -> ChatTokenizer:
    """The file's tokenizer; built once per file and cached as tokenizers' JSON beside the weights."""
    from tokenizers import Tokenizer

    from refit_verify.model.gguf import dequantized_cache_file

    p = Path(gguf_path)
    f = dequantized_cache_file(p).with_suffix("").with_suffix(".tokenizer.json")
    side = f.with_suffix(".chat.json")
    if not (f.exists() and side.exists()):
        meta = _read_meta(p)
        tok = _build(meta)
        f.parent.mkdir(parents=True, exist_ok=True)
        for dest, text in ((f, tok.to_str()), (side, json.dumps({k: meta[k] for k in ("eos_id", "chat_template", "pre")}))):
            fd, tmp = tempfile.mkstemp(dir=dest.parent, suffix=".part")
            with os.fdopen(fd, "w") as out:
                out.write(text)
            os.chmod(tmp, 0o644)
            os.replace(tmp, dest)
    extra = json.loads(side.read_text())
    return ChatTokenizer(Tokenizer.from_file(str(f)), extra["eos_id"], extra["chat_template"])
