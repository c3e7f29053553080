"""The repo map: a ranked outline of a repository's definitions, built with tree-sitter.

Each supported source file is parsed once into *tags*: the names it defines (with the
signature line of each) and the names it references. Tags are cached on disk, keyed by
the file's (mtime_ns, size), plus a content hash while the mtime is too fresh to trust.
Files form a graph with an edge from a file that references a name to the files that
define it (rare, long names weigh more); PageRank, personalised toward the focus files,
ranks the files, each file's rank flows to the definitions it uses, and the best-ranked
definitions are printed, grouped by file, until the token budget is spent.

`build_map(root, focus=[...], max_tokens=...)` is the whole API; the `repo_map` tool and
the agent loop both call it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from functools import lru_cache
from operator import mul as mul_, sub as sub_
from pathlib import Path
from typing import Iterable

from m2_mcp.budget import estimate_tokens
from m2_mcp.rg import find_rg, list_files

MAX_FILE_BYTES = 1_000_000
MAX_SIG_CHARS = 160
MAX_DEFINERS = 20  # a name defined in more files than this says nothing about which one is meant
DAMPING = 0.85
CACHE_VERSION = 2  # bump when the queries, the builtins or the tag format change
FRESH_SECONDS = 2.0  # an mtime this close to "now" may hide a same-size edit: hash the content too
POOL_MIN_FILES = 300  # parse on all cores only when this many files need parsing
WORKER_TIMEOUT = 600  # seconds a worker process may take over its share before it is parsed here instead

EXTENSIONS = {
    ".py": "python", ".pyi": "python",
    ".js": "javascript", ".mjs": "javascript", ".cjs": "javascript", ".jsx": "javascript",
    ".ts": "typescript", ".mts": "typescript", ".cts": "typescript", ".tsx": "tsx",
    ".go": "go",
    ".rs": "rust",
    ".java": "java",
    ".c": "c", ".h": "c",
    ".cc": "cpp", ".cpp": "cpp", ".cxx": "cpp", ".c++": "cpp", ".hpp": "cpp", ".hh": "cpp", ".hxx": "cpp",
    ".h++": "cpp", ".ipp": "cpp",
}

# Tag queries: `@def` captures the name of a definition (its line is the signature shown),
# `@ref` a name used (calls, type uses, imports, base classes).
_JS_COMMON = """
(function_declaration name: (identifier) @def)
(generator_function_declaration name: (identifier) @def)
(method_definition name: (property_identifier) @def)
(variable_declarator name: (identifier) @def value: [(arrow_function) (function_expression)])
(call_expression function: [(identifier) @ref (member_expression property: (property_identifier) @ref)])
(new_expression constructor: (identifier) @ref)
(import_specifier name: (identifier) @ref)
"""
QUERIES = {
    "python": """
(class_definition name: (identifier) @def)
(function_definition name: (identifier) @def)
(module (expression_statement (assignment left: (identifier) @def)))
(call function: [(identifier) @ref (attribute attribute: (identifier) @ref)])
(class_definition superclasses: (argument_list [(identifier) @ref (attribute attribute: (identifier) @ref)]))
(decorator [(identifier) @ref (attribute attribute: (identifier) @ref)])
(type (identifier) @ref)
(import_from_statement name: (dotted_name (identifier) @ref))
""",
    "javascript": _JS_COMMON + """
(class_declaration name: (identifier) @def)
(class_heritage (identifier) @ref)
""",
    "typescript": _JS_COMMON + """
(function_signature name: (identifier) @def)
(class_declaration name: (type_identifier) @def)
(abstract_class_declaration name: (type_identifier) @def)
(interface_declaration name: (type_identifier) @def)
(type_alias_declaration name: (type_identifier) @def)
(enum_declaration name: (identifier) @def)
(method_signature name: (property_identifier) @def)
(abstract_method_signature name: (property_identifier) @def)
(internal_module name: (identifier) @def)
(extends_clause value: (identifier) @ref)
(type_identifier) @ref
""",
    "go": """
(function_declaration name: (identifier) @def)
(method_declaration name: (field_identifier) @def)
(type_spec name: (type_identifier) @def)
(type_alias name: (type_identifier) @def)
(method_elem name: (field_identifier) @def)
(call_expression function: [(identifier) @ref (selector_expression field: (field_identifier) @ref)])
(type_identifier) @ref
""",
    "rust": """
(function_item name: (identifier) @def)
(function_signature_item name: (identifier) @def)
(struct_item name: (type_identifier) @def)
(enum_item name: (type_identifier) @def)
(union_item name: (type_identifier) @def)
(trait_item name: (type_identifier) @def)
(type_item name: (type_identifier) @def)
(mod_item name: (identifier) @def)
(macro_definition name: (identifier) @def)
(call_expression function: [(identifier) @ref (field_expression field: (field_identifier) @ref)
                            (scoped_identifier name: (identifier) @ref)])
(macro_invocation macro: (identifier) @ref)
(type_identifier) @ref
""",
    "java": """
(class_declaration name: (identifier) @def)
(interface_declaration name: (identifier) @def)
(enum_declaration name: (identifier) @def)
(record_declaration name: (identifier) @def)
(annotation_type_declaration name: (identifier) @def)
(method_declaration name: (identifier) @def)
(constructor_declaration name: (identifier) @def)
(method_invocation name: (identifier) @ref)
(type_identifier) @ref
""",
    "c": """
(function_declarator declarator: (identifier) @def)
(struct_specifier name: (type_identifier) @def body: (_))
(union_specifier name: (type_identifier) @def body: (_))
(enum_specifier name: (type_identifier) @def body: (_))
(type_definition declarator: (type_identifier) @def)
(preproc_function_def name: (identifier) @def)
(call_expression function: [(identifier) @ref (field_expression field: (field_identifier) @ref)])
(type_identifier) @ref
""",
    "cpp": """
(function_declarator declarator: [(identifier) (field_identifier)] @def)
(function_declarator declarator: (qualified_identifier name: (identifier) @def))
(class_specifier name: (type_identifier) @def body: (_))
(struct_specifier name: (type_identifier) @def body: (_))
(union_specifier name: (type_identifier) @def body: (_))
(enum_specifier name: (type_identifier) @def body: (_))
(namespace_definition name: (namespace_identifier) @def)
(alias_declaration name: (type_identifier) @def)
(type_definition declarator: (type_identifier) @def)
(preproc_function_def name: (identifier) @def)
(call_expression function: [(identifier) @ref (field_expression field: (field_identifier) @ref)
                            (qualified_identifier name: (identifier) @ref)])
(type_identifier) @ref
""",
}
QUERIES["tsx"] = QUERIES["typescript"]

# Names that almost always mean the language's own builtins, not a definition in the repo
# (a repo that defines `str` or `len` somewhere should not become everyone's dependency).
_JS_GLOBALS = (
    "require Promise Array Object Map Set WeakMap Error TypeError JSON Math Date RegExp Symbol String Number "
    "Boolean parseInt parseFloat setTimeout clearTimeout setInterval console fetch"
)
BUILTINS = {
    # builtins, plus the methods of builtin types: `d.get(...)` is nearly always dict.get, so a
    # repo's own `get` method must not collect a reference from every file that reads a dict
    "python": frozenset(dir(__import__("builtins"))) | frozenset(
        name for kind in (dict, list, str, set, bytes, int, float, tuple) for name in dir(kind) if name[0] != "_"),
    "javascript": frozenset(_JS_GLOBALS.split()),
    "typescript": frozenset((_JS_GLOBALS + " Record Partial Readonly Pick Omit Required ReturnType").split()),
    "go": frozenset(
        "append cap clear close complex copy delete imag len make max min new panic print println real recover "
        "bool byte complex64 complex128 error float32 float64 int int8 int16 int32 int64 rune string uint uint8 "
        "uint16 uint32 uint64 uintptr any comparable".split()
    ),
    "rust": frozenset(
        "String Vec Option Result Box Rc Arc Some Ok Err Self HashMap HashSet println print format vec assert "
        "assert_eq assert_ne panic write writeln eprintln debug_assert unreachable todo".split()
    ),
    "java": frozenset(
        "String Object Integer Long Double Float Boolean Character Byte Short Override Exception RuntimeException "
        "List Map Set ArrayList HashMap HashSet System".split()
    ),
    "c": frozenset("malloc calloc realloc free printf fprintf sprintf snprintf memcpy memset strlen strcmp assert".split()),
}
BUILTINS["tsx"] = BUILTINS["typescript"]
BUILTINS["cpp"] = BUILTINS["c"] | {"std", "string", "vector", "map", "unique_ptr", "shared_ptr", "make_unique"}

_GRAMMARS = {  # language -> (module, function returning the grammar)
    "python": ("tree_sitter_python", "language"),
    "javascript": ("tree_sitter_javascript", "language"),
    "typescript": ("tree_sitter_typescript", "language_typescript"),
    "tsx": ("tree_sitter_typescript", "language_tsx"),
    "go": ("tree_sitter_go", "language"),
    "rust": ("tree_sitter_rust", "language"),
    "java": ("tree_sitter_java", "language"),
    "c": ("tree_sitter_c", "language"),
    "cpp": ("tree_sitter_cpp", "language"),
}

# Tags of one file: definitions as [name, 1-based line, signature], references as {name: count}.
Defs = list[list]
Refs = dict[str, int]


@dataclass
class RepoMapResult:
    map: str
    files: list[str]  # repo-relative paths shown, best-ranked first
    total_files: int  # supported source files considered
    tokens: int
    truncated: bool  # some definitions did not fit in max_tokens
    parsed: int = 0  # files parsed on this call (cache misses)
    cached: int = 0  # files whose tags came from the cache
    ranks: dict[str, float] = field(default_factory=dict, repr=False)  # PageRank of every file


@lru_cache(maxsize=None)
def _tools(lang: str):
    """(Parser, QueryCursor) for a language, built once per process."""
    import importlib

    import tree_sitter as ts

    module, fn = _GRAMMARS[lang]
    language = ts.Language(getattr(importlib.import_module(module), fn)())
    return ts.Parser(language), ts.QueryCursor(ts.Query(language, QUERIES[lang]))


def _signature(data: bytes, start: int) -> str:
    """The source line holding byte `start`, continued while its brackets are open."""
    begin = data.rfind(b"\n", 0, start) + 1
    end = data.find(b"\n", start)
    end = len(data) if end < 0 else end
    line = data[begin:end]
    extra = 0
    while line.count(b"(") > line.count(b")") and end < len(data) and extra < 4:
        nxt = data.find(b"\n", end + 1)
        nxt = len(data) if nxt < 0 else nxt
        line += b" " + data[end + 1 : nxt].strip()
        end, extra = nxt, extra + 1
    text = line.decode("utf-8", "replace").rstrip().expandtabs(4)
    if extra:
        text = text.replace("( ", "(").replace(", )", ")").replace(" )", ")")
    if len(text) > MAX_SIG_CHARS:
        text = text[: MAX_SIG_CHARS - 3] + "..."
    return text


def extract_tags(data: bytes, lang: str) -> tuple[Defs, Refs]:
    """Definitions and references in one file's source."""
    parser, cursor = _tools(lang)
    tree = parser.parse(data)
    captures = cursor.captures(tree.root_node)
    defs: Defs = []
    seen_rows: set[int] = set()
    for node in sorted(captures.get("def", ()), key=lambda n: n.start_byte):
        row = node.start_point[0]
        if row in seen_rows:
            continue
        seen_rows.add(row)
        defs.append([node.text.decode("utf-8", "replace"), row + 1, _signature(data, node.start_byte)])
    refs: Refs = {}
    builtins = BUILTINS[lang]
    for node in captures.get("ref", ()):
        name = node.text.decode("utf-8", "replace")
        if name not in builtins:
            refs[name] = refs.get(name, 0) + 1
    return defs, refs


def default_cache_dir(root: Path) -> Path:
    """`$M2_MCP_CACHE_DIR` (else `$XDG_CACHE_HOME/m2-mcp`, else `~/.cache/m2-mcp`) + `/repomap/<root hash>`."""
    base = os.environ.get("M2_MCP_CACHE_DIR")
    if base:
        top = Path(base).expanduser()
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        top = (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "m2-mcp"
    digest = hashlib.sha256(str(Path(root).resolve()).encode()).hexdigest()[:16]
    return top / "repomap" / digest


class TagCache:
    """Per-file tags in one JSON file per repo: {rel: [mtime_ns, size, content hash or None, defs, refs]}."""

    def __init__(self, directory: Path):
        self.path = directory / "tags.json"
        self.entries: dict[str, list] = {}
        self.dirty = False
        try:
            blob = json.loads(self.path.read_bytes())
            if blob.get("version") == CACHE_VERSION:
                self.entries = blob["files"]
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            pass  # missing or unreadable: start empty

    def get(self, rel: str, st: os.stat_result, path: Path) -> tuple[Defs, Refs] | None:
        entry = self.entries.get(rel)
        if not entry or entry[0] != st.st_mtime_ns or entry[1] != st.st_size:
            return None
        if entry[2] is not None:  # stored while the mtime was fresh: check the content too
            try:
                if _digest(path.read_bytes()) != entry[2]:
                    return None
            except OSError:
                return None
            if time.time() - st.st_mtime_ns / 1e9 > FRESH_SECONDS:
                entry[2] = None
                self.dirty = True
        return entry[3], entry[4]

    def put(self, rel: str, st: os.stat_result, digest: str | None, tags: tuple[Defs, Refs]) -> None:
        """Store tags; `digest` (the content hash) is given when the mtime is too fresh to trust."""
        self.entries[rel] = [st.st_mtime_ns, st.st_size, digest, tags[0], tags[1]]
        self.dirty = True

    def save(self, keep: set[str]) -> None:
        """Write atomically (temp file + rename), dropping entries for files that are gone."""
        stale = set(self.entries) - keep
        for rel in stale:
            del self.entries[rel]
        if not (self.dirty or stale):
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".tags-", suffix=".tmp")
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps({"version": CACHE_VERSION, "files": self.entries}, separators=(",", ":")))
            os.replace(tmp, self.path)
        except OSError:
            pass  # a read-only cache dir costs speed, not correctness


def _digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def source_files(root: Path) -> list[str]:
    """Repo-relative paths of files in a supported language, honouring .gitignore."""
    rg = find_rg()
    rels: list[str] | None = None
    if rg:
        try:
            out = subprocess.run(
                [rg, "--files", "--null"], cwd=root, capture_output=True, timeout=60, stdin=subprocess.DEVNULL
            )
            if out.returncode in (0, 1):
                rels = [p for p in out.stdout.decode("utf-8", "surrogateescape").split("\0") if p]
        except (OSError, subprocess.SubprocessError):
            rels = None
    if rels is None:
        rels = [p.relative_to(root).as_posix() for p in list_files(root)]
    return sorted(r for r in rels if os.path.splitext(r)[1].lower() in EXTENSIONS)


def _parse_file(job: tuple[str, str, bool]) -> tuple[Defs, Refs, str | None] | None:
    """Tags of one file (None if unreadable); binaries give no tags. Runs in pool workers too."""
    path, lang, want_digest = job
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError:
        return None
    digest = _digest(data) if want_digest else None
    if len(data) > MAX_FILE_BYTES or b"\0" in data[:8192]:
        return [], {}, digest
    try:
        defs, refs = extract_tags(data, lang)
    except Exception:  # a grammar hiccup must not break the map
        defs, refs = [], {}
    return defs, refs, digest


def _parse_all(jobs: list[tuple[str, str, bool]]) -> list:
    """Parse files; with many of them, on every core: this process plus worker processes."""
    workers = min(os.cpu_count() or 1, 4)
    if len(jobs) < POOL_MIN_FILES or workers < 2 or os.environ.get("M2_MCP_REPOMAP_POOL", "1") == "0":
        return [_parse_file(job) for job in jobs]
    chunks = [jobs[i::workers] for i in range(workers)]  # interleaved, so big files spread out
    outputs: list[list | None] = [None] * workers
    procs: list[subprocess.Popen] = []
    threads = []
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(Path(__file__).resolve().parent.parent), os.environ.get("PYTHONPATH")) if p)}

    def collect(i: int, proc: subprocess.Popen) -> None:
        try:
            out, _ = proc.communicate(json.dumps(chunks[i]).encode(), timeout=WORKER_TIMEOUT)
            if proc.returncode == 0:
                outputs[i] = json.loads(out)
        except (OSError, ValueError, subprocess.SubprocessError):
            pass

    try:
        for i in range(1, workers):
            proc = subprocess.Popen(
                [sys.executable, "-c", "from m2_mcp.repomap import _worker; _worker()"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env,
            )
            procs.append(proc)
            thread = threading.Thread(target=collect, args=(i, proc), daemon=True)
            thread.start()
            threads.append(thread)
        outputs[0] = [_parse_file(job) for job in chunks[0]]
        for thread in threads:
            thread.join()
    except OSError:
        pass  # could not start a worker: its share is parsed here below
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    results: list = [None] * len(jobs)
    for i, chunk in enumerate(chunks):
        out = outputs[i]
        if out is None or len(out) != len(chunk):
            out = [_parse_file(job) for job in chunk]
        results[i::workers] = out
    return results


def _worker() -> None:
    """Worker process entry: job list (JSON) on stdin, results (JSON) on stdout."""
    jobs = json.loads(sys.stdin.buffer.read())
    sys.stdout.write(json.dumps([_parse_file(tuple(job)) for job in jobs], separators=(",", ":")))


def _load_tags(root: Path, rels: list[str], cache: TagCache) -> tuple[dict[str, tuple[Defs, Refs]], int, int]:
    """Tags for every file (from the cache when unchanged); skips binaries, huge files, escapes."""
    tags: dict[str, tuple[Defs, Refs]] = {}
    misses: list[tuple[str, os.stat_result]] = []
    cached = 0
    now = time.time()
    for rel in rels:
        path = root / rel
        try:
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                if not path.resolve().is_relative_to(root):
                    continue
                st = os.stat(path)
            if not stat.S_ISREG(st.st_mode):
                continue
        except OSError:
            continue
        hit = cache.get(rel, st, path)
        if hit is not None:
            tags[rel] = hit
            cached += 1
        elif st.st_size > MAX_FILE_BYTES:
            cache.put(rel, st, None, ([], {}))  # remembered, so it is not even opened next time
            tags[rel] = ([], {})
        else:
            misses.append((rel, st))
    jobs = [
        (str(root / rel), EXTENSIONS[os.path.splitext(rel)[1].lower()], now - st.st_mtime_ns / 1e9 <= FRESH_SECONDS)
        for rel, st in misses
    ]
    for (rel, st), out in zip(misses, _parse_all(jobs)):
        if out is not None:
            cache.put(rel, st, out[2], (out[0], out[1]))
            tags[rel] = (out[0], out[1])
    return tags, len(misses), cached


def _is_telling(name: str) -> bool:
    """Long snake_case / camelCase / kebab-case names are specific enough to count more."""
    return len(name) >= 8 and ("_" in name.strip("_") or "-" in name or (name.lower() != name and name.upper() != name))


def rank_files(
    tags: dict[str, tuple[Defs, Refs]], focus: set[str], idents: set[str]
) -> tuple[dict[str, float], dict[str, float]]:
    """PageRank of the files over reference edges, and the rank flowing to each definer of a name.

    A file referencing `name` sends weight to every file defining it, split evenly among them;
    rare, long and task-mentioned names weigh more, private ones less; references from focus
    files weigh more and the random jump favours the focus files (personalisation).
    """
    files = list(tags)
    n = len(files)
    if n == 0:
        return {}, {}
    index = {f: i for i, f in enumerate(files)}
    defines: dict[str, set[int]] = defaultdict(set)
    for f, (defs, _) in tags.items():
        i = index[f]
        for d in defs:
            defines[d[0]].add(i)

    out_names: list[list[tuple[str, float]]] = [[] for _ in files]  # per file: (name, weight per definer)
    adjacency: list[dict[int, float]] = [{} for _ in files]
    for f, (_, refs) in tags.items():
        src = index[f]
        boost = 10.0 if f in focus else 1.0
        agg = adjacency[src]
        for name, count in refs.items():
            definers = defines.get(name)
            if not definers or len(definers) > MAX_DEFINERS or src in definers:
                continue  # undefined here, too generic, or (most likely) the file's own definition
            mul = boost
            if name in idents:
                mul *= 10
            if _is_telling(name):
                mul *= 10
            if name[0] == "_":
                mul *= 0.1
            w = mul * math.sqrt(count) / len(definers)
            out_names[src].append((name, w))
            for dst in definers:
                agg[dst] = agg.get(dst, 0.0) + w
    outw = [sum(a.values()) for a in adjacency]

    # incoming lists for a pull-style power iteration (the inner sums run in C)
    in_src: list[list[int]] = [[] for _ in files]
    in_w: list[list[float]] = [[] for _ in files]
    for src, agg in enumerate(adjacency):
        for dst, w in agg.items():
            in_src[dst].append(src)
            in_w[dst].append(w / outw[src])
    dangling = [i for i in range(n) if not outw[i]]

    personal = [1.0] * n
    focused = [index[f] for f in focus if f in index]
    for i in focused:
        personal[i] += 10.0 * n / len(focused)
    total = sum(personal)
    personal = [p / total for p in personal]

    rank = personal[:]
    for _ in range(100):
        jump = 1 - DAMPING + DAMPING * sum(rank[i] for i in dangling)
        scaled = [DAMPING * r for r in rank]
        get = scaled.__getitem__
        new = [
            jump * personal[i] + (sum(map(mul_, map(get, in_src[i]), in_w[i])) if in_src[i] else 0.0)
            for i in range(n)
        ]
        delta = sum(map(abs, map(sub_, new, rank)))
        rank = new
        if delta < 1e-5:
            break

    flow: dict[str, float] = defaultdict(float)
    for src, names in enumerate(out_names):
        if names:
            share = rank[src] / outw[src]
            for name, w in names:
                flow[name] += share * w
    return dict(zip(files, rank)), flow


def render(
    tags: dict[str, tuple[Defs, Refs]], ranks: dict[str, float], flow: dict[str, float],
    focus: set[str], max_tokens: int,
) -> tuple[str, list[str], bool]:
    """Pick the best-scored definitions that fit in `max_tokens`; return (map, files shown, truncated)."""
    items = []  # (-score, -file rank, file, line, signature)
    get = flow.get
    for f, (defs, _) in tags.items():
        if not defs:
            continue
        rank = ranks[f]
        own = rank * (1.0 if f in focus else 0.1) / len(defs)
        items.extend((-(get(name, 0.0) + own), -rank, f, line, sig) for name, line, sig in defs)
    items.sort()

    budget = max_tokens  # counted with estimate_tokens, which holds in real tokens within +10%
    used = 0
    chosen: dict[str, list[tuple[int, str]]] = {}
    for _, _, f, line, sig in items:
        cost = estimate_tokens("⋮\n│" + sig + "\n")
        if f not in chosen:
            cost += estimate_tokens(f + ":\n⋮\n")  # the file's header and closing line
        if used + cost > budget:
            if budget - used < 4:
                break
            continue
        used += cost
        chosen.setdefault(f, []).append((line, sig))
    shown = sum(len(v) for v in chosen.values())
    parts = []
    for f, lines in chosen.items():
        parts.append(f + ":\n")
        for _, sig in sorted(lines):
            parts.append("⋮\n│" + sig + "\n")
        parts.append("⋮\n")
    return "".join(parts), list(chosen), shown < len(items)


def build_map(
    root: Path,
    *,
    focus: Iterable[str] = (),
    max_tokens: int = 2048,
    cache_dir: Path | None = None,
    idents: Iterable[str] = (),
) -> RepoMapResult:
    """The ranked repo map of `root` within `max_tokens`.

    `focus`: repo-relative files or directories to personalise toward (the task's files,
    recently edited ones); `idents`: names mentioned in the task, weighted up.
    Tags are cached in `cache_dir` (default: `default_cache_dir(root)`), never in the tree.
    """
    root = Path(root).resolve()
    rels = source_files(root)
    cache = TagCache(Path(cache_dir) if cache_dir is not None else default_cache_dir(root))
    tags, parsed, cached = _load_tags(root, rels, cache)
    cache.save(set(tags))

    focus_set: set[str] = set()
    for entry in focus:
        rel = Path(entry).as_posix().strip("/")
        rel = "" if rel == "." else rel.removeprefix("./")
        if rel in tags:
            focus_set.add(rel)
        else:
            prefix = rel + "/" if rel else ""
            focus_set.update(f for f in tags if f.startswith(prefix))
    ranks, flow = rank_files(tags, focus_set, set(idents))
    text, shown, truncated = render(tags, ranks, flow, focus_set, max(0, max_tokens))
    return RepoMapResult(
        map=text, files=shown, total_files=len(tags), tokens=estimate_tokens(text), truncated=truncated,
        parsed=parsed, cached=cached, ranks=ranks,
    )
