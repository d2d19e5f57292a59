"""Command line: parse flags into a Config, set up logging, serve the app on uvloop."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
from collections.abc import Mapping, Sequence

import uvloop
from aiohttp import web

from node_exporter_ml import __version__
from node_exporter_ml.agent import Agent
from node_exporter_ml.collectors.base import StartupError
from node_exporter_ml.config import Config, ConfigError, parse_args, parse_listen_address
from node_exporter_ml.logformat import formatter
from node_exporter_ml.registry import load_collectors
from node_exporter_ml.web import WEB_CONFIG, build_app
from node_exporter_ml.webconfig import WebConfig, check_reload, load_web_config
from node_exporter_ml.webguard import (
    AUTH,
    quiet_malformed_requests,
    raise_fd_limit,
    server_options,
)

log = logging.getLogger("node_exporter_ml")

SHUTDOWN_TIMEOUT = 4.0  # SIGTERM -> stopped within 5 s, in-flight requests finished first
_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "error": logging.ERROR,
}


def setup_logging(level: str, fmt: str = "logfmt") -> None:
    """Log one logfmt or JSON line per record to stderr, as promslog does."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(fmt))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(_LEVELS[level])
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


SD_LISTEN_FDS_START = 3  # sd_listen_fds(3): passed sockets start at fd 3


def systemd_sockets(environ: Mapping[str, str], pid: int) -> list[socket.socket]:
    """The listening stream sockets systemd passed (socket activation, sd_listen_fds(3)).

    Raises:
        ConfigError: no sockets were passed to this process, or one is not a listening
            TCP or Unix stream socket.
    """
    if environ.get("LISTEN_PID") != str(pid):
        raise ConfigError(
            "no socket passed by systemd (LISTEN_PID is not this process; "
            "start the agent from its .socket unit)"
        )
    count = environ.get("LISTEN_FDS", "")
    if not count.isdigit() or not 1 <= int(count) <= 64:
        raise ConfigError(f"expected LISTEN_FDS to be a count of 1 to 64 sockets, got {count!r}")
    sockets = []
    for fd in range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + int(count)):
        try:
            sock = socket.socket(fileno=fd)
        except OSError as err:
            raise ConfigError(f"fd {fd}: not a socket ({err.strerror or err})") from None
        listening = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
        if sock.type != socket.SOCK_STREAM or not listening:
            sock.detach()
            raise ConfigError(f"fd {fd}: expected a listening stream socket (ListenStream=)")
        sock.setblocking(False)
        sockets.append(sock)
    return sockets


async def serve(config: Config, web_config: WebConfig) -> int:
    """Run the agent and its server until SIGTERM/SIGINT; SIGHUP reloads the config files."""
    agent = Agent(config)
    app = build_app(agent, web_config)
    runner = web.AppRunner(
        app,
        handle_signals=False,
        access_log=None,
        shutdown_timeout=SHUTDOWN_TIMEOUT,
        **server_options(config.idle_timeout),
    )
    try:
        await runner.setup()  # starts the agent: collectors may refuse their configuration
    except StartupError as err:
        await runner.cleanup()
        print(f"node-exporter-ml: error: {err}", file=sys.stderr)
        return 2
    ssl_context = web_config.ssl_context()  # reconfigured in place on reload
    scheme = "https" if web_config.tls else "http"
    if config.systemd_socket:
        try:
            sockets = systemd_sockets(os.environ, os.getpid())
        except ConfigError as err:
            await runner.cleanup()
            print(f"node-exporter-ml: error: --web.systemd-socket: {err}", file=sys.stderr)
            return 2
        sites = [web.SockSite(runner, s, ssl_context=ssl_context) for s in sockets]
        for sock_site in sites:
            await sock_site.start()
        where = ", ".join(sock_site.name for sock_site in sites)
    else:
        host, port = parse_listen_address(config.listen_address)
        site = web.TCPSite(runner, host or None, port, ssl_context=ssl_context, reuse_address=True)
        try:
            await site.start()
        except OSError as err:
            await runner.cleanup()
            print(
                f"node-exporter-ml: error: --web.listen-address: {config.listen_address}: "
                f"{err.strerror or err}",
                file=sys.stderr,
            )
            return 1
        where = f"{scheme}://{f'[{host}]' if ':' in host else host or '0.0.0.0'}:{port}"
    log.info(
        "listening on %s (version %s, collectors: %s)",
        where,
        __version__,
        ",".join(sorted(config.collectors)) or "none",
    )

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def reload_files() -> WebConfig:
        # Everything is checked before anything changes: a refused reload keeps it all.
        web_cfg = load_web_config(config.web_config_file)
        check_reload(app[WEB_CONFIG], web_cfg)
        web_cfg.ssl_context()  # fails on bad TLS files
        agent.reload()
        if ssl_context is not None:  # TLS stays on (check_reload): new handshakes use web_cfg
            web_cfg.configure(ssl_context)
        return web_cfg

    async def reload() -> None:
        try:
            web_cfg = await loop.run_in_executor(None, reload_files)
        except ConfigError as err:
            log.error("reload failed, keeping the running configuration: %s", err)
            return
        app[AUTH] = app[AUTH].with_users(web_cfg.users)
        app[WEB_CONFIG] = web_cfg
        log.info("configuration reloaded")

    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(reload()))
    await stop.wait()
    log.info("shutting down")
    await runner.cleanup()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `node-exporter-ml` and `python -m node_exporter_ml`."""
    registry = load_collectors()
    try:
        config = parse_args(argv, {n: r.default_enabled for n, r in registry.items()})
        web_config = load_web_config(config.web_config_file)
    except ConfigError as err:
        print(f"node-exporter-ml: error: {err}", file=sys.stderr)
        return 2
    setup_logging(config.log_level, config.log_format)
    quiet_malformed_requests()
    raise_fd_limit()
    # A SIGHUP before the loop's handler is installed must not end the agent (its default).
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        return uvloop.run(serve(config, web_config))
    except ConfigError as err:  # e.g. a collector rejecting its settings at start
        print(f"node-exporter-ml: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0
