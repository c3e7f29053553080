"""Start the scripted M2 stand-in (m2_mcp/standin.py via tools/m2_standin.py, a test instrument) from tests.

    with start_standin({"scripts": [...]}, tmp_path) as m2:
        endpoint = Endpoint(m2.base_url, m2.model, "EMPTY")
        ...
        m2.requests()  # every request body the stand-in received
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "tools" / "m2_standin.py"
READY = "M2 stand-in listening on "


@dataclass
class StandIn:
    base_url: str
    model: str
    proc: subprocess.Popen
    record_path: Path

    def requests(self) -> list[dict]:
        """Request bodies received so far, oldest first."""
        with urllib.request.urlopen(self.base_url.removesuffix("/v1") + "/_standin/requests", timeout=10) as r:
            return json.loads(r.read())


@contextlib.contextmanager
def start_standin(scenario: dict, tmp_path: Path, startup_timeout: float = 20.0) -> Iterator[StandIn]:
    """Run the stand-in on a free port for the duration of the `with` block."""
    tmp_path = Path(tmp_path)
    tmp_path.mkdir(parents=True, exist_ok=True)
    scenario_file = tmp_path / f"scenario-{id(scenario):x}.json"
    scenario_file.write_text(json.dumps(scenario))
    record = tmp_path / f"requests-{id(scenario):x}.jsonl"
    errlog = open(tmp_path / f"standin-{id(scenario):x}.err", "w+")
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), "--scenario", str(scenario_file), "--port", "0", "--record", str(record)],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errlog, text=True)
    try:
        line: list[str] = []
        reader = threading.Thread(target=lambda: line.append(proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(startup_timeout)
        if not line or not line[0].startswith(READY):
            proc.kill()
            proc.wait(timeout=10)
            errlog.seek(0)
            raise RuntimeError(f"M2 stand-in did not start: {(line or [''])[0]!r} {errlog.read()[-2000:]}")
        yield StandIn(line[0][len(READY):].strip(), scenario.get("model", "MiniMaxAI/MiniMax-M2"), proc, record)
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        proc.stdout.close()
        errlog.close()
