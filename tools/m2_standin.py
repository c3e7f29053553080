#!/usr/bin/env python3
"""Entry point for the scripted M2 stand-in (a test instrument); the code is m2_mcp/standin.py.

    python tools/m2_standin.py --scenario FILE.json [--host 127.0.0.1] [--port 0] [--record FILE.jsonl]
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from m2_mcp.standin import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
