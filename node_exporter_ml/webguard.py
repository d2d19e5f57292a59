"""Who may call what, and how many at once: the one auth middleware and the admission budgets.

Every route but the probes needs basic auth when the web config has users. Writes under
``/api/`` (uploads, deletes, stateless evaluation) need the drift token as well when one is
configured: an additional requirement, never a substitute for basic auth. Authentication runs
before a request takes an admission slot; bcrypt runs are capped and their verdicts cached.
Scrapes and probes have their own admission budget, so no flood of API calls can starve them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import resource
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, HttpProcessingError

from node_exporter_ml.webconfig import BasicAuth

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
TokenSource = Callable[[], bytes | None]

PROBES = frozenset({"/healthz", "/readyz"})
"""Kubelets probe without credentials; the probes tell nothing beyond up or down."""
TOKEN_HEADER = "X-Drift-Token"
"""Where the drift token goes when the Authorization header carries basic auth."""
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
BCRYPT_CONCURRENCY = 2
"""bcrypt runs at once (each ~50-250 ms of CPU); more wait."""
BCRYPT_QUEUE = 32
"""Requests waiting for a bcrypt run before more are answered 503 at once."""


class Authenticator:
    """Basic-auth users and the drift token sources; checks one request's credentials."""

    def __init__(
        self, users: Mapping[str, bytes] | BasicAuth, tokens: Sequence[TokenSource] = ()
    ) -> None:
        self.basic = users if isinstance(users, BasicAuth) else BasicAuth(users)
        self.tokens = tuple(tokens)
        self._bcrypt = asyncio.Semaphore(BCRYPT_CONCURRENCY)
        self._waiting = 0

    def with_users(self, users: Mapping[str, bytes]) -> Authenticator:
        """The same token sources with reloaded basic-auth users (the verdict cache restarts)."""
        return Authenticator(users, self.tokens)

    def token(self) -> bytes | None:
        """The drift token writes need (None: no token configured)."""
        for source in self.tokens:
            token = source()
            if token is not None:
                return token
        return None

    async def basic_ok(self, header: str | None) -> bool | None:
        """The verdict for an Authorization header; None when too many bcrypt runs wait."""
        ok = self.basic.cached(header)
        if ok is not None:
            return ok
        if self._waiting >= BCRYPT_QUEUE:
            return None
        self._waiting += 1
        try:
            async with self._bcrypt:
                loop = asyncio.get_running_loop()
                return await loop.run_in_executor(None, self.basic.verify, header)
        finally:
            self._waiting -= 1


AUTH = web.AppKey("auth", Authenticator)


def _given_token(request: web.Request) -> str | None:
    given = request.headers.get(TOKEN_HEADER)
    if given is not None:
        return given.strip()
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" else None


def _refuse(request: web.Request, status: int, message: str, **headers: str) -> web.Response:
    named = {k.replace("_", "-"): v for k, v in headers.items()}
    if request.path.startswith("/api/"):
        return web.json_response({"error": message}, status=status, headers=named)
    return web.Response(status=status, text=message + "\n", headers=named)


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Basic auth on every route but the probes; the drift token on writes under /api/."""
    if request.path in PROBES:
        return await handler(request)
    auth = request.app[AUTH]
    if auth.basic.enabled:
        ok = await auth.basic_ok(request.headers.get("Authorization"))
        if ok is None:
            return _refuse(request, 503, "too many authentication attempts", Retry_After="1")
        if not ok:
            return _refuse(
                request,
                401,
                "Unauthorized",
                WWW_Authenticate='Basic realm="node-exporter-ml"',
            )
    if request.method not in READ_METHODS and request.path.startswith("/api/"):
        token = auth.token()
        if token is not None:
            given = _given_token(request)
            if not given:
                return _refuse(
                    request,
                    401,
                    f"missing drift token (Authorization: Bearer <token>, or {TOKEN_HEADER}: "
                    "<token> alongside basic auth)",
                    WWW_Authenticate="Bearer",
                )
            if not hmac.compare_digest(given.encode(), token):
                return _refuse(
                    request,
                    401,
                    "invalid drift token",
                    WWW_Authenticate='Bearer error="invalid_token"',
                )
    return await handler(request)


@dataclass
class Admission:
    """Concurrent requests per budget: scrapes and probes apart from everything else."""

    limit: Callable[[], int]
    scrape_paths: frozenset[str]
    inflight: dict[str, int] = field(default_factory=lambda: {"scrape": 0, "api": 0})

    def budget(self, request: web.Request) -> str:
        """The budget a request counts against."""
        return "scrape" if request.path in self.scrape_paths else "api"


ADMISSION = web.AppKey("admission", Admission)


@web.middleware
async def admission_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer 503 beyond --web.max-requests concurrent requests of one budget (0: no limit)."""
    admission = request.app[ADMISSION]
    budget = admission.budget(request)
    limit = admission.limit()
    inflight = admission.inflight
    if limit and inflight[budget] >= limit:
        return _refuse(
            request,
            503,
            f"too many concurrent requests (limit {limit})",
            Retry_After="1",
        )
    inflight[budget] += 1
    try:
        return await handler(request)
    finally:
        inflight[budget] -= 1


def server_options(idle_timeout: float) -> dict[str, Any]:
    """Keyword arguments for web.AppRunner (passed on to each connection's RequestHandler).

    aiohttp closes a connection that is idle, or still sending its request headers, after
    `keepalive_timeout`; its default (3630 s) let 1,100 idle sockets exhaust a 1024-descriptor
    limit (--web.idle-timeout, 30s by default).
    """
    return {"keepalive_timeout": idle_timeout}


FD_LIMIT = 65536


def raise_fd_limit() -> int:
    """Raise the soft open-files limit to the hard one (at most FD_LIMIT), as Go programs do.

    Returns the soft limit in force afterwards.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = FD_LIMIT if hard == resource.RLIM_INFINITY else min(hard, FD_LIMIT)
    if soft != resource.RLIM_INFINITY and soft < want:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class MalformedRequestFilter(logging.Filter):
    """Malformed requests logged as one line at DEBUG instead of a traceback at ERROR.

    aiohttp logs every unparsable request, before any authentication, with a traceback.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite records of malformed requests; keep every other record as it is."""
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, HttpProcessingError | BadHttpMessage):
            return True
        if not logging.getLogger(record.name).isEnabledFor(logging.DEBUG):
            return False
        record.msg = "malformed request: %s"
        record.args = (str(exc).splitlines()[0] if str(exc) else type(exc).__name__,)
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        record.exc_info = record.exc_text = None
        return True


def quiet_malformed_requests() -> None:
    """Install MalformedRequestFilter on aiohttp's server logger (once)."""
    server = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, MalformedRequestFilter) for f in server.filters):
        server.addFilter(MalformedRequestFilter())
