"""Test-only server: the drift routes on a real aiohttp server, as the agent would mount them.

    python tests/drift_runner.py --state-dir DIR [--port 0] [--token-file FILE]

Prints ``LISTENING <port>`` once it accepts connections, then serves until killed. The
durability test kills it with SIGKILL and starts it again on the same state directory.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from aiohttp import web

from node_exporter_ml.drift.service import DriftService
from node_exporter_ml.drift.web import routes


async def serve(state_dir: str, port: int, token_file: str | None, interval: float) -> None:
    service = DriftService(state_dir, interval=interval, token_file=token_file)
    await service.start()
    app = web.Application()
    app.add_routes(routes(service))
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    server = site._server
    assert server is not None
    bound = server.sockets[0].getsockname()[1]
    print(f"LISTENING {bound}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await runner.cleanup()
    await service.stop()


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--state-dir", required=True)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--token-file")
    p.add_argument("--interval", type=float, default=60.0)
    args = p.parse_args()
    asyncio.run(serve(args.state_dir, args.port, args.token_file, args.interval))
    return 0


if __name__ == "__main__":
    sys.exit(main())
