"""Where m2-mcp keeps its local state (run ledger, background tasks)."""

from __future__ import annotations

import os
from pathlib import Path


def state_dir() -> Path:
    """`$M2_MCP_HOME`, else `$XDG_STATE_HOME/m2-mcp`, else `~/.local/state/m2-mcp` (not created here)."""
    home = os.environ.get("M2_MCP_HOME")
    if home:
        return Path(home).expanduser()
    xdg = os.environ.get("XDG_STATE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".local" / "state"
    return base / "m2-mcp"
