"""The repo map on real small repos in several languages: content, ranking, budget, cache, tool."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import anyio
import pytest

from conftest import make_repo
from m2_mcp import repomap
from m2_mcp.budget import estimate_tokens
from m2_mcp.errors import ToolError
from m2_mcp.repo import Repo
from m2_mcp.repomap import build_map
from m2_mcp.tools import registry

POLYGLOT = {
    "shapes.py": (
        "import math\n\n\nclass Shape:\n    def area(self, scale: float = 1.0) -> float:\n"
        "        raise NotImplementedError\n\n\ndef make_circle(\n    radius: float,\n    name: str = 'c',\n"
        ") -> Shape:\n    return Circle(radius)\n"
    ),
    "web/app.js": (
        'import { formatPrice } from "./util.js";\n\nexport class Cart {\n'
        "  constructor(items) { this.items = items; }\n  total() { return formatPrice(this.items.length); }\n}\n\n"
        "export function checkout(cart) {\n  return cart.total();\n}\n\n"
        "const applyDiscount = (price, pct) => price * (1 - pct);\n"
    ),
    "web/types.ts": (
        "export interface Invoice {\n  id: string;\n  amount(): number;\n}\n\nexport type InvoiceId = string;\n\n"
        "export enum Status { Open, Paid }\n\nexport class InvoiceStore {\n"
        "  find(id: InvoiceId): Invoice | undefined { return undefined; }\n}\n\n"
        "export function loadInvoices(store: InvoiceStore): Invoice[] { return []; }\n"
    ),
    "web/view.tsx": "export function Badge(props: { label: string }) {\n  return <b>{props.label}</b>;\n}\n",
    "src/server.go": (
        "package server\n\ntype Handler interface {\n\tServe(req *Request) error\n}\n\n"
        "type Request struct {\n\tPath string\n}\n\nfunc NewRequest(path string) *Request {\n"
        "\treturn &Request{Path: path}\n}\n\nfunc (r *Request) Validate() error {\n\treturn nil\n}\n"
    ),
    "lib/parser.rs": (
        "pub struct Token {\n    pub text: String,\n}\n\npub enum Kind { Word, Number }\n\n"
        "pub trait Visitor {\n    fn visit(&mut self, token: &Token);\n}\n\n"
        "pub fn tokenize(input: &str) -> Vec<Token> {\n    Vec::new()\n}\n"
    ),
    "java/com/acme/Ledger.java": (
        "package com.acme;\n\npublic class Ledger {\n    public Ledger(String owner) {}\n\n"
        "    public long balance(String account) {\n        return 0L;\n    }\n}\n\n"
        "interface Auditor {\n    void audit(Ledger ledger);\n}\n"
    ),
    "lib/buffer.c": (
        "#include <stdlib.h>\n\nstruct buffer {\n    char *data;\n};\n\ntypedef struct buffer buffer_t;\n\n"
        "buffer_t *buffer_new(int cap) {\n    return malloc(sizeof(buffer_t));\n}\n\n"
        "static int\nbuffer_grow(buffer_t *b, int extra)\n{\n    return 0;\n}\n"
    ),
    "cpp/matrix.hpp": (
        "namespace linalg {\n\nclass Matrix {\npublic:\n    Matrix(int rows, int cols);\n"
        "    double trace() const;\n};\n\ndouble Matrix::trace() const { return 0.0; }\n\n"
        "template <typename T>\nT dot_product(const T* a, const T* b, int n) { return T(); }\n\n}\n"
    ),
}

EXPECTED_LINES = {
    "shapes.py": ["class Shape:", "    def area(self, scale: float = 1.0) -> float:",
                  "def make_circle(radius: float, name: str = 'c') -> Shape:"],
    "web/app.js": ["export class Cart {", "  constructor(items) { this.items = items; }",
                   "  total() { return formatPrice(this.items.length); }",
                   "export function checkout(cart) {", "const applyDiscount = (price, pct) => price * (1 - pct);"],
    "web/types.ts": ["export interface Invoice {", "  amount(): number;", "export type InvoiceId = string;",
                     "export enum Status { Open, Paid }", "export class InvoiceStore {",
                     "  find(id: InvoiceId): Invoice | undefined { return undefined; }",
                     "export function loadInvoices(store: InvoiceStore): Invoice[] { return []; }"],
    "web/view.tsx": ["export function Badge(props: { label: string }) {"],
    "src/server.go": ["type Handler interface {", "    Serve(req *Request) error", "type Request struct {",
                      "func NewRequest(path string) *Request {", "func (r *Request) Validate() error {"],
    "lib/parser.rs": ["pub struct Token {", "pub enum Kind { Word, Number }", "pub trait Visitor {",
                      "    fn visit(&mut self, token: &Token);", "pub fn tokenize(input: &str) -> Vec<Token> {"],
    "java/com/acme/Ledger.java": ["public class Ledger {", "    public Ledger(String owner) {}",
                                  "    public long balance(String account) {", "interface Auditor {",
                                  "    void audit(Ledger ledger);"],
    "lib/buffer.c": ["struct buffer {", "typedef struct buffer buffer_t;", "buffer_t *buffer_new(int cap) {",
                     "buffer_grow(buffer_t *b, int extra)"],
    "cpp/matrix.hpp": ["namespace linalg {", "class Matrix {", "    Matrix(int rows, int cols);",
                       "    double trace() const;", "double Matrix::trace() const { return 0.0; }",
                       "T dot_product(const T* a, const T* b, int n) { return T(); }"],
}

# A Python project with a clear shape: core.py is used by everyone, leaf.py by no one.
LAYERED = {
    "core.py": "class LedgerEntry:\n    pass\n\n\ndef compute_total(entries):\n    return sum(entries)\n",
    "billing.py": "from core import compute_total, LedgerEntry\n\n\ndef invoice_amount(items):\n"
                  "    return compute_total(items)\n",
    "reports.py": "from core import compute_total\n\n\ndef yearly_report(rows):\n"
                  "    return compute_total(rows) + LedgerEntry()\n",
    "cli.py": "from billing import invoice_amount\nfrom reports import yearly_report\n\n\ndef main():\n"
              "    print(invoice_amount([1]), yearly_report([2]), compute_total([3]))\n",
    "leaf.py": "def lonely_helper(x):\n    return x * 2\n\n\nclass Unused:\n    def method_nobody_calls(self):\n"
               "        return 1\n",
}


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never touch the user's ~/.cache: the default cache dir goes under tmp."""
    monkeypatch.setenv("M2_MCP_CACHE_DIR", str(tmp_path / "cache"))


def shown_lines(text: str, path: str) -> list[str]:
    """The signature lines shown under `path:` in a rendered map."""
    lines, inside = [], False
    for line in text.splitlines():
        if line.endswith(":") and not line.startswith(("│", "⋮")):
            inside = line == f"{path}:"
        elif inside and line.startswith("│"):
            lines.append(line[1:])
    return lines


def test_definitions_and_signatures_in_every_language(tmp_path: Path) -> None:
    root = make_repo(tmp_path / "poly", POLYGLOT)
    result = build_map(root, max_tokens=4000)
    assert result.total_files == len(POLYGLOT)
    assert not result.truncated
    assert sorted(result.files) == sorted(POLYGLOT)
    for path, expected in EXPECTED_LINES.items():
        assert shown_lines(result.map, path) == expected, path


def test_widely_referenced_file_ranks_above_leaf(tmp_path: Path) -> None:
    root = make_repo(tmp_path / "layered", LAYERED)
    result = build_map(root, max_tokens=1000)
    assert result.files[0] == "core.py"
    assert result.files.index("core.py") < result.files.index("leaf.py")
    assert result.ranks["core.py"] > result.ranks["billing.py"] > result.ranks["leaf.py"]
    assert result.map.startswith("core.py:\n⋮\n│class LedgerEntry:\n⋮\n│def compute_total(entries):\n")
    # the most used definition is the first to get in under a tight budget
    assert build_map(root, max_tokens=24).map == "core.py:\n⋮\n│def compute_total(entries):\n⋮\n"


def test_calls_to_builtin_type_methods_do_not_rank_a_same_named_method(tmp_path: Path) -> None:
    cache = "class Cache:\n    def get(self, key):\n        return key\n"
    parser = "def load(text):\n    return dict(line.split('=') for line in text.splitlines())\n"
    reads = ", ".join(f"settings.get('k{j}')" for j in range(8))
    users = {f"user_{i}.py": f"from parser import load\n\ndef run_{i}(text):\n    settings = load(text)\n    return {reads}\n"
             for i in range(5)}
    root = make_repo(tmp_path / "gets", {"cache.py": cache, "parser.py": parser, **users})
    ranked = build_map(root, max_tokens=2048).files
    assert ranked.index("parser.py") < ranked.index("cache.py")


def test_focus_lifts_a_file(tmp_path: Path) -> None:
    root = make_repo(tmp_path / "layered", LAYERED)
    plain = build_map(root, max_tokens=1000)
    focused = build_map(root, focus=["leaf.py"], max_tokens=1000)
    assert plain.files.index("leaf.py") > 0
    assert focused.files[0] == "leaf.py"
    assert focused.ranks["leaf.py"] > plain.ranks["leaf.py"]
    # under a tight budget the focused file's outline comes first, whole
    tight = build_map(root, focus=["leaf.py"], max_tokens=55)
    assert tight.truncated and tight.files[0] == "leaf.py"
    assert shown_lines(tight.map, "leaf.py") == [
        "def lonely_helper(x):", "class Unused:", "    def method_nobody_calls(self):"]
    # a focused directory lifts the files under it
    in_dir = make_repo(tmp_path / "dirs", {**{f"pkg/{k}": v for k, v in LAYERED.items() if k != "leaf.py"},
                                           "extras/leaf.py": LAYERED["leaf.py"]})
    assert build_map(in_dir, focus=["extras"], max_tokens=1000).files[0] == "extras/leaf.py"


def test_mentioned_identifiers_weigh_more(tmp_path: Path) -> None:
    files = {
        "a.py": "def alpha_thing():\n    pass\n",
        "b.py": "def beta_thing():\n    pass\n",
        "use.py": "alpha_thing()\nbeta_thing()\n",
    }
    root = make_repo(tmp_path / "idents", files)
    assert build_map(root, idents=["beta_thing"]).files[0] == "b.py"
    assert build_map(root, idents=["alpha_thing"]).files[0] == "a.py"


@pytest.mark.parametrize("budget", [1, 10, 25, 60, 120, 400])
def test_budget_is_never_exceeded(tmp_path: Path, budget: int) -> None:
    root = make_repo(tmp_path / "poly", POLYGLOT)
    result = build_map(root, max_tokens=budget)
    assert result.tokens == estimate_tokens(result.map) <= budget
    assert result.truncated
    assert len(result.files) == len({line for line in result.map.splitlines() if line.endswith(":")
                                      and not line.startswith("│")})
    if budget >= 25:
        assert result.files  # something useful fits
    bigger = build_map(root, max_tokens=budget * 4)
    assert len(bigger.map) >= len(result.map)


def test_binary_huge_ignored_and_unsupported_files_are_skipped_quietly(tmp_path: Path) -> None:
    outside = tmp_path / "outside.py"
    outside.write_text("def secret_outside():\n    pass\n")
    root = make_repo(tmp_path / "mixed", {
        "good.py": "def visible_function():\n    pass\n",
        "notes.txt": "def not_code():\n",
        "README.md": "# def nope()\n",
        ".gitignore": "build/\n",
        "build/generated.py": "def generated_function():\n    pass\n",
    })
    (root / "blob.py").write_bytes(b"def binary_function():\n\x00\x01\x02" * 10)
    (root / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    (root / "huge.py").write_text("def huge_function():\n    pass\n" + "# filler\n" * 120_000)
    (root / "link.py").symlink_to(outside)
    result = build_map(root, max_tokens=2000)
    assert result.files == ["good.py"]
    assert result.map == "good.py:\n⋮\n│def visible_function():\n⋮\n"
    for absent in ("binary_function", "huge_function", "generated_function", "not_code", "secret_outside", "nope"):
        assert absent not in result.map
    # a second call is still quiet and serves the skipped files from the cache
    again = build_map(root, max_tokens=2000)
    assert again.map == result.map and again.parsed == 0


def test_cache_skips_unchanged_files_and_invalidates_edited_ones(tmp_path: Path) -> None:
    root = make_repo(tmp_path / "layered", LAYERED)
    cache_dir = tmp_path / "tags"
    first = build_map(root, cache_dir=cache_dir)
    assert (first.parsed, first.cached) == (len(LAYERED), 0)
    assert (cache_dir / "tags.json").is_file()

    warm = build_map(root, cache_dir=cache_dir)
    assert (warm.parsed, warm.cached) == (0, len(LAYERED))
    assert warm.map == first.map

    # an edit that changes the size: only that file is parsed again
    (root / "leaf.py").write_text(LAYERED["leaf.py"] + "\n\ndef freshly_added(y):\n    return y\n")
    edited = build_map(root, cache_dir=cache_dir)
    assert (edited.parsed, edited.cached) == (1, len(LAYERED) - 1)
    assert "│def freshly_added(y):" in edited.map

    # a same-size edit that keeps the old mtime (a racy write): caught by the content hash
    target = root / "billing.py"
    st = target.stat()
    text = target.read_text()
    target.write_text(text.replace("invoice_amount", "invoice_amounz"))
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert target.stat().st_size == st.st_size
    racy = build_map(root, cache_dir=cache_dir)
    assert racy.parsed == 1
    assert "│def invoice_amounz(items):" in racy.map

    # a deleted file drops out of the map
    (root / "leaf.py").unlink()
    gone = build_map(root, cache_dir=cache_dir)
    assert "leaf.py" not in gone.files and gone.parsed == 0


def test_default_cache_lives_outside_the_work_tree(tmp_path: Path) -> None:
    root = make_repo(tmp_path / "layered", LAYERED)
    build_map(root)
    cache_files = list((tmp_path / "cache" / "repomap").glob("*/tags.json"))
    assert len(cache_files) == 1
    assert cache_files[0].parent == repomap.default_cache_dir(root)
    status = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--ignored"],
                            capture_output=True, text=True, check=True).stdout
    assert status == ""


def test_process_pool_gives_the_same_map(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_repo(tmp_path / "poly", POLYGLOT)
    serial = build_map(root, cache_dir=tmp_path / "serial", max_tokens=4000)
    monkeypatch.setattr(repomap, "POOL_MIN_FILES", 2)
    pooled = build_map(root, cache_dir=tmp_path / "pooled", max_tokens=4000)
    assert pooled.parsed == len(POLYGLOT)
    assert pooled.map == serial.map


def call(root: Path, args: dict) -> dict:
    return anyio.run(registry.call, Repo(root), "repo_map", args)


def test_tool_through_the_registry(tmp_path: Path) -> None:
    root = make_repo(tmp_path / "layered", LAYERED)
    result = call(root, {"paths": ["leaf.py"], "max_tokens": 500})
    assert set(result) == {"map", "files", "total_files", "tokens", "truncated"}
    assert result["files"][0] == "leaf.py"
    assert result["total_files"] == len(LAYERED)
    assert result["tokens"] == estimate_tokens(result["map"]) <= 500
    assert call(root, {})["files"][0] == "core.py"
    assert call(root, {"paths": ["./leaf.py"]})["files"][0] == "leaf.py"
    spec = registry.load_all()["repo_map"]
    assert spec.for_agent and spec.read_only
    assert set(spec.input_schema()["properties"]) == {"paths", "max_tokens"}


@pytest.mark.parametrize("args, message", [
    ({"paths": ["../outside.py"]}, "outside the repository root"),
    ({"paths": [".git/config"]}, "inside .git/"),
    ({"paths": ["missing.py"]}, "path not found"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"path": "core.py"}, "path"),
])
def test_tool_refuses_bad_arguments(tmp_path: Path, args: dict, message: str) -> None:
    root = make_repo(tmp_path / "layered", LAYERED)
    (tmp_path / "outside.py").write_text("def outside():\n    pass\n")
    with pytest.raises(ToolError, match=message):
        call(root, args)
