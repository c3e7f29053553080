"""Secrets in the environment: which variables are secret, a child environment without them,
and text with their values replaced (tool results, log lines, the run ledger).

A variable is secret when it is one of ours (`M2_API_KEY`, `OPENAI_API_KEY`, `M2_MCP_TOKEN`) or
its name looks like a credential (`*_TOKEN`, `*_KEY`, `*SECRET*`, `*PASSWORD*`, `*_PWD`, `*_DSN`, `*JWT*`, ...) or is `AWS_*`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

OURS = ("M2_API_KEY", "OPENAI_API_KEY", "M2_MCP_TOKEN")
# Unset for model-chosen commands but not redacted from text (an endpoint URL is not a secret in a result).
UNSET_ONLY = ("M2_BASE_URL", "SSH_AUTH_SOCK", "GPG_AGENT_INFO")
_NAMES = re.compile(
    r"(_TOKEN|_TOKENS|_KEY|_KEYS|_PAT|_CREDENTIAL|_CREDENTIALS|_AUTH|_PWD|_PASS|_DSN)$|SECRET|PASSWORD|JWT|"
    r"PASSWD|API_?KEY|ACCESS_?KEY|PRIVATE_?KEY|^GITHUB_TOKEN$|^GH_TOKEN$|^HF_TOKEN$|^NPM_TOKEN$|^DATABASE_URL$",
    re.IGNORECASE,
)
# Never secret, whatever the patterns say: what commands need to run.
KEEP = frozenset({"PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TERM", "TZ", "PWD", "TMPDIR",
                  "VIRTUAL_ENV", "CONDA_PREFIX", "CONDA_DEFAULT_ENV", "PYTHONPATH", "PYTHONHOME"})
MIN_LEN = 8  # shorter values would redact ordinary words
MARK = "[redacted]"


def is_secret(name: str) -> bool:
    """Unset for model-chosen commands: credentials, and all of `AWS_*` (profiles, regions: cloud access)."""
    return is_credential(name) or (name.upper().startswith("AWS_") and name not in KEEP)


def is_credential(name: str) -> bool:
    """A variable whose value is redacted from text (`AWS_CA_BUNDLE`, a file path, is not)."""
    return name not in KEEP and not name.startswith("LC_") and (name in OURS or bool(_NAMES.search(name)))


def scrub_env(env: Mapping[str, str | None]) -> dict[str, str]:
    """`env` without secret variables (and without None values)."""
    return {k: v for k, v in env.items() if v is not None and not is_secret(k) and k not in UNSET_ONLY}


def secret_values(env: Mapping[str, str] | None = None) -> list[str]:
    """Values of secret variables at least MIN_LEN long, longest first (so a key containing another goes first)."""
    env = os.environ if env is None else env
    values = {v for k, v in env.items() if v and len(v) >= MIN_LEN and is_credential(k)}
    return sorted(values, key=len, reverse=True)


def redact(text: str, values: list[str] | None = None) -> str:
    """`text` with every secret value replaced by `[redacted]`."""
    if not text:
        return text
    for value in secret_values() if values is None else values:
        if value in text:
            text = text.replace(value, MARK)
    return text


def redact_obj(obj: Any, values: list[str] | None = None) -> Any:
    """A JSON-like object (dicts, lists, strings) with secret values replaced in every string."""
    values = secret_values() if values is None else values
    if not values:
        return obj
    if isinstance(obj, str):
        return redact(obj, values)
    if isinstance(obj, dict):
        return {k: redact_obj(v, values) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [redact_obj(v, values) for v in obj]
    return obj


class LogFilter:
    """A logging filter that redacts secret values from each record's message (and traceback text)."""

    def filter(self, record) -> bool:
        values = secret_values()
        if values:
            message = record.getMessage()
            if record.exc_info and not record.exc_text:
                import logging

                record.exc_text = logging.Formatter().formatException(record.exc_info)
            record.msg, record.args = redact(message, values), None
            if record.exc_text:
                record.exc_text = redact(record.exc_text, values)
        return True
