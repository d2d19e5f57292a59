"""The aiohttp app: /metrics from the cached exposition, landing page, health, auth, limits."""

from __future__ import annotations

import asyncio
import html
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from node_exporter_ml import __version__
from node_exporter_ml.agent import Agent
from node_exporter_ml.exposition import negotiate, select_collectors
from node_exporter_ml.webconfig import BasicAuth, WebConfig

log = logging.getLogger(__name__)

AGENT = web.AppKey("agent", Agent)
AUTH = web.AppKey("auth", BasicAuth)
WEB_CONFIG = web.AppKey("web_config", WebConfig)
INFLIGHT = web.AppKey("inflight", list[int])

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# Probes must work without credentials: kubelets do not send them.
_UNAUTHENTICATED = frozenset({"/healthz", "/readyz"})


@web.middleware
async def limit_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer 503 beyond --web.max-requests concurrent requests (0: no limit)."""
    inflight = request.app[INFLIGHT]
    limit = request.app[AGENT].config.max_requests
    if limit and inflight[0] >= limit:
        return web.json_response(
            {"error": f"too many concurrent requests (limit {limit})"},
            status=503,
            headers={"Retry-After": "1"},
        )
    inflight[0] += 1
    try:
        return await handler(request)
    finally:
        inflight[0] -= 1


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Basic auth per the web config; bcrypt runs off the loop, verdicts are cached."""
    auth = request.app[AUTH]
    if not auth.enabled or request.path in _UNAUTHENTICATED:
        return await handler(request)
    header = request.headers.get("Authorization")
    if header and header.lower().startswith("bearer ") and request.path.startswith("/api/"):
        # The drift API's own bearer token guards its write endpoints.
        return await handler(request)
    ok = auth.cached(header)
    if ok is None:
        ok = await asyncio.get_running_loop().run_in_executor(None, auth.verify, header)
    if not ok:
        return web.Response(
            status=401,
            text="Unauthorized\n",
            headers={"WWW-Authenticate": 'Basic realm="node-exporter-ml"'},
        )
    return await handler(request)


@web.middleware
async def headers_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Add the web config's http_server_config.headers to every response."""
    response = await handler(request)
    for key, value in request.app[WEB_CONFIG].headers.items():
        response.headers.setdefault(key, value)
    return response


async def metrics(request: web.Request) -> web.Response:
    """Serve the cached exposition: no I/O, no collection; each format is made once a tick."""
    agent = request.app[AGENT]
    try:
        only = select_collectors(request.query.getall("collect[]", []), agent.collector_names)
    except ValueError as err:
        return web.Response(status=400, text=f"{err}\n")
    fmt, content_type = negotiate(request.headers)
    body = await agent.body(fmt, only)
    if body is None:
        return web.Response(status=503, text="no snapshot yet\n")
    headers = {"Content-Type": content_type, "Vary": "Accept, Accept-Encoding"}
    if fmt[1]:
        headers["Content-Encoding"] = "gzip"
    return web.Response(body=body, headers=headers)


async def healthz(request: web.Request) -> web.Response:
    """Alive: the loop answers."""
    return web.Response(text="ok\n")


async def readyz(request: web.Request) -> web.Response:
    """Ready once the first snapshot is rendered."""
    if request.app[AGENT].rendered is None:
        return web.Response(status=503, text="no snapshot yet\n")
    return web.Response(text="ok\n")


async def index(request: web.Request) -> web.Response:
    """A landing page: version, collectors and their last status, links."""
    agent = request.app[AGENT]
    snapshot = agent.snapshot
    rows = []
    for c in agent.collectors:
        result = snapshot.results.get(c.name) if snapshot else None
        if result is None:
            status, detail = "pending", ""
        elif result.success:
            status, detail = "ok", f"{result.duration_seconds * 1000:.1f} ms"
        else:
            status, detail = "failing", result.error or ""
        rows.append(
            f"<tr><td>{html.escape(c.name)}</td><td class={status}>{status}</td>"
            f"<td>{html.escape(detail)}</td></tr>"
        )
    path = html.escape(agent.config.telemetry_path)
    links = [
        f'<a href="{path}">Metrics</a>',
        '<a href="/healthz">Health</a>',
        '<a href="/readyz">Readiness</a>',
    ]
    if any(c.name == "drift" for c in agent.collectors):
        links.append('<a href="/api/v1/openapi.json">Drift API (OpenAPI)</a>')
    body = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>node-exporter-ml</title>
<style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:.2em .8em;text-align:left}}
.ok{{color:#070}}.failing{{color:#b00}}.pending{{color:#777}}</style></head>
<body><h1>node-exporter-ml</h1>
<p>Version {html.escape(__version__)}; a snapshot every {agent.config.interval:g}s.</p>
<p>{" | ".join(links)}</p>
<h2>Collectors</h2>
<table><tr><th>collector</th><th>status</th><th>detail</th></tr>
{"".join(rows) or "<tr><td colspan=3>none enabled</td></tr>"}
</table></body></html>
"""
    return web.Response(text=body, content_type="text/html")


def build_app(agent: Agent, web_config: WebConfig | None = None) -> web.Application:
    """The aiohttp application around an agent (the agent is started by the app's lifecycle)."""
    web_config = web_config or WebConfig()
    max_body = agent.config.file.drift_max_body_bytes
    app = web.Application(
        middlewares=[limit_middleware, auth_middleware, headers_middleware],
        client_max_size=max_body,
    )
    app[AGENT] = agent
    app[AUTH] = BasicAuth(web_config.users)
    app[WEB_CONFIG] = web_config
    app[INFLIGHT] = [0]
    app.router.add_get(agent.config.telemetry_path, metrics)
    app.router.add_get("/", index)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    for c in agent.collectors:
        routes = getattr(c, "routes", None)
        if callable(routes):
            app.router.add_routes(routes())

    async def lifecycle(app: web.Application) -> object:
        await agent.start()
        yield
        await agent.stop()

    app.cleanup_ctx.append(lifecycle)  # type: ignore[arg-type]
    return app
