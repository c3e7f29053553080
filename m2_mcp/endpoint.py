"""Model endpoint settings: CLI flag, then environment, then default (contract section 1)."""

from __future__ import annotations

import os
import re
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
    """Flag, else environment (an empty variable counts as unset), else the default; an empty flag is an error."""
    for flag, value in (("--base-url", base_url), ("--model", model)):
        if value is not None and not value.strip():
            raise UsageError(f"{flag} must not be empty (leave it out to use the environment or the default)")
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


# ---- the quick look before a run: is the endpoint there, and does it serve the model? ----------

PROBE_TIMEOUT_S = 3.0  # one GET per endpoint; a refused connection answers at once


def list_models(endpoint: Endpoint, timeout: float) -> list[str]:
    """GET <base>/models: the served model ids. Raises OSError (HTTPError too) or ValueError."""
    import base64
    import json
    import urllib.request
    from urllib.parse import unquote

    parts = urlsplit(f"{endpoint.base_url}/models")
    auth = f"Bearer {endpoint.api_key}"
    if parts.username is not None:  # user:password@ in the URL is basic auth, as the model client sends it
        user_pass = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        auth = "Basic " + base64.b64encode(user_pass.encode()).decode()
        parts = parts._replace(netloc=parts.netloc.rsplit("@", 1)[1])
    request = urllib.request.Request(urlunsplit(parts), headers={"Authorization": auth})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        body = json.loads(response.read().decode("utf-8", "replace"))
    data = body.get("data", []) if isinstance(body, dict) else []
    return [str(m.get("id")) for m in data if isinstance(m, dict)]


def check_endpoints(endpoints: list[Endpoint], timeout: float = PROBE_TIMEOUT_S) -> Endpoint:
    """One quick `GET /models` per endpoint, in order, before any work starts.

    Returns the first endpoint that answers and serves the model (or answers without a usable
    list, e.g. 404: nothing to check against). Raises UsageError (exit 2) when an endpoint
    answers but refuses the key or does not serve the model (naming the served models), and
    EndpointError (exit 3) when none answers."""
    import urllib.error

    from m2_mcp.errors import EndpointError

    unreachable: list[str] = []
    wrong: list[str] = []
    for endpoint in endpoints:
        try:
            models = list_models(endpoint, timeout)
        except urllib.error.HTTPError as exc:
            if exc.code in (401, 403):
                wrong.append(f"{endpoint.display} refused the API key (HTTP {exc.code}); "
                             "set M2_API_KEY (or OPENAI_API_KEY) to a key it accepts")
            elif exc.code >= 500:
                unreachable.append(f"{endpoint.display}/models: HTTP {exc.code}")
            elif exc.code == 404 and not re.search(r"/v\d+[a-z]*/?$", urlsplit(endpoint.base_url).path):
                wrong.append(f"{endpoint.display}/models: HTTP 404; the base URL should end in /v1 "
                             f"(e.g. {endpoint.display.rstrip('/')}/v1)")
            else:  # no model list on this API (404, 405 under /v1): the chat request will tell
                return endpoint
            continue
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or exc
            unreachable.append(f"{endpoint.display}: {reason}")
            continue
        if not models or endpoint.model in models:
            return endpoint
        wrong.append(f"model {endpoint.model!r} is not served by {endpoint.display} "
                     f"(served: {', '.join(models[:10])}); pass --model or set M2_MODEL")
    if wrong:
        raise UsageError(wrong[0])
    raise EndpointError(f"cannot reach the model endpoint ({'; '.join(unreachable)}); start the model "
                        "(m2-mcp model serve), or point --base-url / M2_BASE_URL at it, or try 'm2-mcp demo'")
