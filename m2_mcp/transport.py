"""Running the MCP server on stdio, legacy SSE (`/sse`) or streamable HTTP (`/mcp`).

HTTP rules (both HTTP transports):
- binds 127.0.0.1 by default; a non-loopback bind needs a bearer token (`M2_MCP_TOKEN`);
- with a token set, every request but `/health` needs `Authorization: Bearer <token>` (401);
- a request whose `Origin` is not local is refused (403) on every bind, and on loopback
  binds the SDK also checks `Host` (421), which stops DNS-rebinding attacks;
- on loopback binds every route (`/health` and `/metrics` too) checks `Host` (421);
- `/health` answers `ok`, `/metrics` serves the Prometheus metrics;
- at most MAX_CONNECTIONS connections are kept (more are closed at once), a connection that
  sends nothing is closed after IDLE_TIMEOUT_S, one whose request headers trickle in for longer
  than HEADERS_TIMEOUT_S is closed too (slowloris), and a repeated log message is written once per
  LOG_INTERVAL_S with a count of the repeats, so a flood of clients cannot flood stderr.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import os
import resource
import signal
import socket
import sys
import threading
import time
from urllib.parse import urlsplit

from typing import TYPE_CHECKING

from m2_mcp.errors import UsageError

if TYPE_CHECKING:  # heavy imports (mcp takes ~2 s) wait until a server actually starts
    from mcp.server.mcpserver import MCPServer
    from mcp.server.transport_security import TransportSecuritySettings
    from starlette.datastructures import Headers
    from starlette.types import ASGIApp, Receive, Scope, Send

log = logging.getLogger("m2_mcp.transport")

TRANSPORTS = ("stdio", "sse", "http")
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
TOKEN_ENV = "M2_MCP_TOKEN"
PATHS = {"sse": "/sse", "http": "/mcp"}
OPEN_PATHS = ("/health",)  # answered without a token (still Origin-checked)
_LOCAL_NAMES = ("localhost", "127.0.0.1", "::1")
GRACEFUL_SHUTDOWN_S = 3  # HTTP: open SSE streams never finish on their own
MAX_CONNECTIONS = 512  # lowered to fit the file-descriptor limit
IDLE_TIMEOUT_S = 10  # a connection that sends no request in this time is closed
HEADERS_TIMEOUT_S = 10  # ... and one whose request headers are not complete this long after they began
LOG_INTERVAL_S = 10


def is_loopback(host: str) -> bool:
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_local_origin(origin: str) -> bool:
    """`http(s)://localhost|127.0.0.1|[::1]` with any port."""
    try:
        parts = urlsplit(origin)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and parts.hostname in _LOCAL_NAMES


MIN_TOKEN_CHARS = 16  # a token that guards the tools on a network is not a short password


def check_bind(host: str, token: str | None) -> None:
    """Refuse to expose the tools beyond this machine without a token of at least MIN_TOKEN_CHARS."""
    if not host.strip():
        raise UsageError("--host must not be empty (e.g. 127.0.0.1)")
    if is_loopback(host):
        return
    if not token:
        raise UsageError(
            f"refusing to bind {host} without a token: set {TOKEN_ENV} (clients then send "
            f"'Authorization: Bearer <token>'), or bind 127.0.0.1"
        )
    if len(token) < MIN_TOKEN_CHARS:
        raise UsageError(f"refusing to bind {host} with a {len(token)}-character {TOKEN_ENV}: use at least "
                         f"{MIN_TOKEN_CHARS} random characters (e.g. python -c 'import secrets; "
                         "print(secrets.token_urlsafe(32))')")


class Guard:
    """ASGI middleware: refuse foreign Origins (403), on loopback binds foreign Hosts (421, every
    route), and, with a token, missing/wrong bearers (401)."""

    def __init__(self, app: ASGIApp, token: str | None, hosts: set[str] | None = None) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode() if token else None
        self.hosts = hosts  # allowed Host names (port ignored); None: any

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        from starlette.datastructures import Headers
        from starlette.responses import PlainTextResponse

        if scope["type"] == "websocket":  # no websocket route: refuse before anything else sees it
            await send({"type": "websocket.close", "code": 1008})
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        origin = headers.get("origin")
        if origin is not None and not is_local_origin(origin):
            await PlainTextResponse("forbidden origin\n", status_code=403)(scope, receive, send)
            return
        if self.hosts is not None and host_name(headers.get("host", "")) not in self.hosts:
            await PlainTextResponse("invalid Host header\n", status_code=421)(scope, receive, send)
            return
        if self.expected and scope.get("path") not in OPEN_PATHS and not self._authorized(headers):
            response = PlainTextResponse(
                "unauthorized: send 'Authorization: Bearer <token>'\n",
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, single_response(send))

    def _authorized(self, headers: Headers) -> bool:
        got = headers.get("authorization", "")
        scheme, _, value = got.partition(" ")
        got_bytes = f"Bearer {value.strip()}".encode() if scheme.lower() == "bearer" else b""
        return hmac.compare_digest(got_bytes, self.expected or b"")


def host_name(host: str) -> str:
    """`Host` without its port: `127.0.0.1:8765` -> `127.0.0.1`, `[::1]:80` -> `[::1]`; "" when what
    follows the name is not a port (`127.0.0.1:80@evil.example`)."""
    host = host.strip().lower()
    if host.startswith("["):
        end = host.find("]") + 1
        name, rest = (host[:end], host[end:]) if end else ("", "")
    elif host.count(":") > 1:  # an unbracketed IPv6 address: no port
        name, rest = host, ""
    else:
        name, sep, port = host.partition(":")
        rest = sep + port
    return name if not rest or (rest[0] == ":" and rest[1:].isdigit()) else ""


def loopback_hosts(host: str) -> set[str] | None:
    """Host names a loopback bind answers to (None for other binds: the Host is unknowable)."""
    if not is_loopback(host):
        return None
    bound = f"[{host}]" if ":" in host else host
    return {"127.0.0.1", "localhost", "[::1]", bound.lower()}


def single_response(send: Send) -> Send:
    """Drop a second response on the same request. mcp 2.3's `sse_app` sends an empty
    `Response()` after an SSE stream ends (python-sdk #883), which uvicorn reports as an
    error traceback on every disconnect and shutdown."""
    started = False
    dropping = False

    async def guarded(message: dict) -> None:
        nonlocal started, dropping
        if message["type"] == "http.response.start":
            if started:
                dropping = True
                return
            started = True
        elif dropping and message["type"] == "http.response.body":
            return
        await send(message)

    return guarded


def security_settings(host: str) -> TransportSecuritySettings:
    """The SDK's Host/Origin checks on loopback binds; elsewhere the Host is unknowable, so
    only our Guard's Origin check (and the token) apply."""
    from mcp.server.transport_security import TransportSecuritySettings

    hosts = loopback_hosts(host)
    if hosts is None:
        return TransportSecuritySettings(enable_dns_rebinding_protection=False)
    names = sorted(hosts)
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=[h for n in names for h in (n, f"{n}:*")],
        allowed_origins=[o for s in ("http", "https") for n in names for o in (f"{s}://{n}", f"{s}://{n}:*")],
    )


def add_routes(server: MCPServer) -> None:
    """`/health` and `/metrics` next to the MCP endpoint."""
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse, Response

    from m2_mcp import metrics

    @server.custom_route("/health", methods=["GET"])
    async def health(request: Request) -> Response:
        return PlainTextResponse("ok\n")

    @server.custom_route("/metrics", methods=["GET"])
    async def prometheus(request: Request) -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")


def build_app(server: MCPServer, transport: str, host: str, token: str | None) -> ASGIApp:
    """The guarded Starlette app for `sse` or `http`."""
    add_routes(server)
    settings = security_settings(host)
    if transport == "sse":
        app = server.sse_app(sse_path=PATHS["sse"], transport_security=settings, host=host)
    else:
        app = server.streamable_http_app(streamable_http_path=PATHS["http"], transport_security=settings, host=host)
    return Guard(app, token, loopback_hosts(host))


def listen(host: str, port: int) -> socket.socket:
    """Bind the listening socket ourselves, so a busy port is a one-line usage error."""
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
    except OSError as exc:
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


def serve_http(server: MCPServer, transport: str, host: str, port: int, token: str | None) -> None:
    """Serve until Ctrl-C or SIGTERM, then shut down cleanly (exit 0)."""
    import uvicorn

    check_bind(host, token)
    app = build_app(server, transport, host, token)
    sock = listen(host, port)
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{sock.getsockname()[1]}{PATHS[transport]}"
    kind = "legacy SSE" if transport == "sse" else "streamable HTTP"
    sys.stderr.write(f"m2-mcp: serving MCP over {kind} at {url}{' (bearer token required)' if token else ''}\n")
    sys.stderr.flush()
    limit = connection_limit()
    for handler in logging.getLogger().handlers:
        handler.addFilter(RepeatFilter())
    config = uvicorn.Config(
        app,
        http=capped_protocol(limit),
        log_config=None,  # our logging: stderr, quiet unless --debug
        log_level=logging.getLogger().level,
        access_log=False,
        lifespan="on" if transport == "http" else "off",
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        backlog=max(8, min(128, limit // 2)),  # also how many connections one accept round takes
    )
    # uvicorn re-raises the signal that stopped it; with these handlers that re-raise is a no-op.
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sock.close()


def connection_limit() -> int:
    """MAX_CONNECTIONS, or fewer if the open-file limit (raised to its hard cap) is lower."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else 65536, hard))
            soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        except (ValueError, OSError):
            pass
    return max(8, min(MAX_CONNECTIONS, (soft - 128) // 2))


def capped_protocol(limit: int) -> type:
    """uvicorn's h11 protocol, closing connections beyond `limit` at once, idle ones after IDLE_TIMEOUT_S,
    and those whose request headers are still incomplete HEADERS_TIMEOUT_S after they began."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class CappedProtocol(H11Protocol):
        _headers_due: asyncio.TimerHandle | None = None  # set while a request's headers are arriving

        def connection_made(self, transport) -> None:  # type: ignore[no-untyped-def]
            if len(self.connections) >= limit:
                log.warning("too many connections (limit %d); closing new ones", limit)
                transport.abort()
                return
            super().connection_made(transport)
            self.timeout_keep_alive_task = self.loop.call_later(IDLE_TIMEOUT_S, self.timeout_keep_alive_handler)

        def connection_lost(self, exc: Exception | None) -> None:
            if self._headers_due is not None:
                self._headers_due.cancel()
            if self in self.connections:
                super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self not in self.connections:
                return
            if self.conn.their_state is h11.IDLE and self._headers_due is None:
                # a request has begun: its headers must all arrive by the deadline, however slowly they trickle
                self._headers_due = self.loop.call_later(HEADERS_TIMEOUT_S, self._headers_too_slow)
            super().data_received(data)
            if self.conn.their_state is not h11.IDLE and self._headers_due is not None:
                self._headers_due.cancel()
                self._headers_due = None

        def _headers_too_slow(self) -> None:
            self._headers_due = None
            if not self.transport.is_closing():
                log.warning("closed a connection whose request headers took over %d s", HEADERS_TIMEOUT_S)
                self.transport.close()

    return CappedProtocol


class RepeatFilter(logging.Filter):
    """Pass a kind of message (logger + template) once per LOG_INTERVAL_S; the next one that passes
    says how many were held back. Unless --debug, a traceback becomes one line (`Type: message`),
    so a flood costs one line per kind and interval."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: dict[tuple[str, str], tuple[float, int]] = {}
        self.lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, str(record.msg)[:200])
        now = time.monotonic()
        with self.lock:
            last, held = self.seen.get(key, (-LOG_INTERVAL_S, 0))
            if now - last < LOG_INTERVAL_S:
                self.seen[key] = (last, held + 1)
                return False
            self.seen[key] = (now, 0)
            if len(self.seen) > 1000:
                self.seen.clear()
        if (record.exc_info and logging.getLogger().level > logging.DEBUG) or held:
            message = record.getMessage()
            if record.exc_info and logging.getLogger().level > logging.DEBUG:
                exc = record.exc_info[1]
                message += f" ({type(exc).__name__}: {exc})"
                record.exc_info = record.exc_text = None
            if held:
                message += f" (and {held} more like it in the last {now - last:.0f} s)"
            record.msg, record.args = message, ()
        return True


def serve_stdio(server: MCPServer) -> None:
    """Serve on stdin/stdout until EOF, Ctrl-C or SIGTERM. Only protocol goes to stdout."""
    import anyio
    from mcp.server.stdio import stdio_server

    lowlevel = server._lowlevel_server  # what MCPServer.run_stdio_async runs; we need the step between
    stopping = False

    async def main() -> None:
        async with anyio.create_task_group() as tg:

            async def stop_on_signal() -> None:
                nonlocal stopping
                with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                    async for _ in signals:
                        stopping = True
                        tg.cancel_scope.cancel()
                        return

            tg.start_soon(stop_on_signal)
            async with stdio_server() as (read, write):
                try:
                    await lowlevel.run(read, write, lowlevel.create_initialization_options())
                finally:
                    if stopping:  # shutdown (lifespan cleanup) is done; the SDK's stdin reader
                        _exit_soon()  # blocks in a thread no cancellation can wake while stdin is open
            tg.cancel_scope.cancel()

    anyio.run(main)


def _exit_soon(delay: float = 0.2) -> None:
    sys.stderr.flush()
    timer = threading.Timer(delay, os._exit, (0,))
    timer.daemon = True
    timer.start()


def serve(server: MCPServer, transport: str = "stdio", host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
          token: str | None = None) -> None:
    if transport == "stdio":
        serve_stdio(server)
    else:
        serve_http(server, transport, host, port, token)
