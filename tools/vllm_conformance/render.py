"""Render chat requests the way vLLM does (its chat preprocessing + M2's template) and tokenize them
with the stand-in tokenizer (runs in a vLLM venv; used by benchmarks/bench_prefix_cache.py).

    VLLM_PYTHON tools/vllm_conformance/render.py < requests.jsonl > token_ids.jsonl
"""

import json
import sys

import vllm_driver
from tokenizer import m2_tokenizer

if __name__ == "__main__":
    tok = m2_tokenizer()
    for line in sys.stdin:
        prompt = vllm_driver.render(json.loads(line))
        print(json.dumps({"vllm": vllm_driver.VERSION, "ids": tok.encode(prompt, add_special_tokens=False)}), flush=True)
