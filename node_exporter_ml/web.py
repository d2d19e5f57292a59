"""The aiohttp app: /metrics from the cached exposition, landing page, health, auth, limits."""

from __future__ import annotations

import html
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from node_exporter_ml import __version__
from node_exporter_ml.agent import Agent
from node_exporter_ml.exposition import negotiate, select_collectors
from node_exporter_ml.webconfig import WebConfig
from node_exporter_ml.webguard import (
    ADMISSION,
    AUTH,
    PROBES,
    Admission,
    Authenticator,
    admission_middleware,
    auth_middleware,
)
from node_exporter_ml.webroutes import RouteProvider

log = logging.getLogger(__name__)

AGENT = web.AppKey("agent", Agent)
WEB_CONFIG = web.AppKey("web_config", WebConfig)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


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
    """Alive: the loop answers and the sampler keeps publishing (stale data is not healthy)."""
    stale = request.app[AGENT].staleness()
    if stale is not None:
        return web.Response(status=503, text=f"stale: {stale}\n")
    return web.Response(text="ok\n")


async def readyz(request: web.Request) -> web.Response:
    """Ready once the first snapshot is rendered, and while snapshots stay fresh."""
    if request.app[AGENT].rendered is None:
        return web.Response(status=503, text="no snapshot yet\n")
    return await healthz(request)


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
    for provider in agent.collectors:
        if isinstance(provider, RouteProvider):
            links += [f'<a href="{h}">{html.escape(text)}</a>' for h, text in provider.links()]
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
    # Collectors that serve routes of their own (the drift API); their writes may need a token.
    providers = [c for c in agent.collectors if isinstance(c, RouteProvider)]
    # Outermost first: headers on every answer, auth before a request takes a slot.
    app = web.Application(
        middlewares=[headers_middleware, auth_middleware, admission_middleware],
    )
    app[AGENT] = agent
    app[AUTH] = Authenticator(web_config.users, [p.api_token for p in providers])
    app[WEB_CONFIG] = web_config
    app[ADMISSION] = Admission(
        limit=lambda: agent.config.max_requests,
        scrape_paths=PROBES | {agent.config.telemetry_path},
    )
    app.router.add_get(agent.config.telemetry_path, metrics)
    app.router.add_get("/", index)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    for provider in providers:
        app.router.add_routes(provider.routes())

    async def lifecycle(app: web.Application) -> object:
        await agent.start()
        yield
        await agent.stop()

    app.cleanup_ctx.append(lifecycle)  # type: ignore[arg-type]
    return app
