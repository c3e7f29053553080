"""A small stand-in for MiniMax-M2's tokenizer (the real one is not downloadable on CI).

What the vLLM parsers need from a tokenizer is the shape of the token stream: M2's
control strings (`<think>`, `</think>`, `<minimax:tool_call>`, ...) are single tokens with
the same text, role markers are special tokens, and ordinary text comes a few characters
per token. A byte-level BPE trained on M2's chat template and a little code gives that.
Token counts are therefore approximate (about 3 characters per token).
"""

from __future__ import annotations

import functools
from pathlib import Path

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

HERE = Path(__file__).resolve().parent
BOS, ROLE, EOS, TOOL_ROLE = "]~!b[", "]~b]", "[e~[", "]!d~["      # M2's role markers; EOS ends a message
TEXT_TOKENS = ["<think>", "</think>", "<minimax:tool_call>", "</minimax:tool_call>"]
SAMPLES = [
    "def add(a, b):\n    return a + b\n\n", "import pytest\nfrom calc import add\n\n",
    "def test_add():\n    assert add(2, 3) == 5\n", "The failing test expects the sum. I will fix calc.py.\n",
    '<invoke name="read_file">\n<parameter name="path">calc.py</parameter>\n</invoke>\n',
]


@functools.lru_cache(maxsize=1)
def m2_tokenizer() -> PreTrainedTokenizerFast:
    corpus = [(HERE / "m2_chat_template.jinja").read_text(encoding="utf-8")] + SAMPLES * 20
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(corpus, trainers.BpeTrainer(
        vocab_size=1000, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    bpe.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in (BOS, ROLE, EOS, TOOL_ROLE)])
    bpe.add_tokens([AddedToken(t, special=False, normalized=False) for t in TEXT_TOKENS])
    return PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token=BOS, eos_token=EOS)
