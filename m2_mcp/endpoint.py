"""Model endpoint settings: CLI flag, then environment, then default (contract section 1)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from m2_mcp.errors import UsageError

DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"
DEFAULT_MODEL = "MiniMaxAI/MiniMax-M2"


@dataclass(frozen=True)
class Endpoint:
    base_url: str
    model: str
    api_key: str

    @property
    def display(self) -> str:
        """The base URL for messages and logs: any `user:password@` removed."""
        return display_url(self.base_url)

    def __repr__(self) -> str:  # never show the key
        return f"Endpoint(base_url={self.display!r}, model={self.model!r}, api_key=***)"


def display_url(url: str) -> str:
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1]))


def resolve_endpoint(base_url: str | None = None, model: str | None = None) -> Endpoint:
    return Endpoint(
        base_url=(base_url or os.environ.get("M2_BASE_URL") or DEFAULT_BASE_URL).rstrip("/"),
        model=model or os.environ.get("M2_MODEL") or DEFAULT_MODEL,
        api_key=os.environ.get("M2_API_KEY") or os.environ.get("OPENAI_API_KEY") or "EMPTY",
    )


def add_endpoint_arguments(parser) -> None:
    parser.add_argument("--base-url", help=f"OpenAI-compatible base URL (env M2_BASE_URL; default {DEFAULT_BASE_URL})")
    parser.add_argument("--model", help=f"served model name (env M2_MODEL; default {DEFAULT_MODEL})")


def endpoints_from(base_url: str | None = None, model: str | None = None) -> list[Endpoint]:
    """Several endpoints may be given comma-separated (flag or M2_BASE_URL); tried in order."""
    first = resolve_endpoint(base_url, model)
    urls = [url.strip().rstrip("/") for url in first.base_url.split(",") if url.strip()]
    for url in urls:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UsageError(f"not an http(s) base URL: {display_url(url)} (e.g. http://127.0.0.1:8000/v1)")
    if not urls:
        raise UsageError("no model base URL given")
    return [Endpoint(url, first.model, first.api_key) for url in urls]
