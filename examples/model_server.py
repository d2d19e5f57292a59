"""A tiny model server for the node-exporter-ml demo: latency histogram and drift feed.

It serves a small NumPy model at ``POST /predict``, exposes its own request-latency histogram
``inference_request_duration_seconds{model}`` at ``GET /metrics`` (what node-exporter-ml scrapes
and turns into windowed p50/p99, throughput and latency causes), and feeds the agent's drift
API: the training data as the reference at start, then the features of every request it served
as observations, in batches. A built-in load generator sends it traffic; after
``--drift-after`` seconds that traffic changes (larger amounts, other countries), the way real
input data drifts, so drift shows up in the agent's metrics.

    python examples/model_server.py --port 8000 --agent http://127.0.0.1:9847

No GPU and nothing beyond node-exporter-ml's own dependencies (aiohttp, NumPy,
prometheus_client).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
from aiohttp import ClientError, ClientSession, ClientTimeout, web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest

log = logging.getLogger("model_server")

COUNTRIES = ("de", "fr", "us", "jp", "br")
TRAINING_COUNTRY_P = (0.4, 0.3, 0.2, 0.05, 0.05)
DRIFTED_COUNTRY_P = (0.05, 0.05, 0.2, 0.3, 0.4)
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Model:
    """A fixed two-layer network over three features; scores a transaction."""

    def __init__(self, name: str, width: int, seed: int = 7) -> None:
        rng = np.random.default_rng(seed)
        self.name = name
        self.w1 = rng.standard_normal((4, width)).astype(np.float32)
        self.w2 = rng.standard_normal((width, width)).astype(np.float32) / np.sqrt(width)
        self.w3 = rng.standard_normal(width).astype(np.float32) / np.sqrt(width)

    def predict(self, features: dict[str, Any]) -> tuple[int, float]:
        """Return (prediction, confidence) for one request."""
        country = COUNTRIES.index(features["country"]) if features["country"] in COUNTRIES else 0
        x = np.array(
            [np.log1p(features["amount"]), features["age"] / 100, country / 5, 1.0],
            dtype=np.float32,
        )
        h = np.tanh(x @ self.w1)
        for _ in range(8):  # a little real work per request, a few milliseconds
            h = np.tanh(h @ self.w2)
        p = float(1 / (1 + np.exp(-(h @ self.w3))))
        return int(p > 0.5), max(p, 1 - p)


def sample_features(rng: np.random.Generator, drifted: bool, n: int) -> list[dict[str, Any]]:
    """Rows of request features: the training distribution, or the drifted one."""
    amount = rng.lognormal(4.5 if drifted else 3.0, 0.6, n)
    age = rng.normal(55 if drifted else 38, 12, n).clip(18, 95)
    country = rng.choice(COUNTRIES, n, p=DRIFTED_COUNTRY_P if drifted else TRAINING_COUNTRY_P)
    return [
        {"amount": round(float(a), 2), "age": int(g), "country": str(c)}
        for a, g, c in zip(amount, age, country, strict=True)
    ]


class Server:
    """The HTTP app, its metrics and its drift feed."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.model = Model(args.model, args.width)
        self.registry = CollectorRegistry()
        self.latency = Histogram(
            "inference_request_duration_seconds",
            "Time to serve one prediction",
            ["model"],
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.pending: list[dict[str, Any]] = []
        self.ids = itertools.count()
        self.started = time.monotonic()

    async def predict(self, request: web.Request) -> web.Response:
        """POST /predict {"amount": .., "age": .., "country": ..}."""
        t0 = time.perf_counter()
        try:
            features = await request.json()
            prediction, confidence = self.model.predict(features)
        except (ValueError, KeyError, TypeError) as err:
            return web.json_response({"error": f"bad request: {err}"}, status=400)
        row_id = f"r{next(self.ids)}"
        self.pending.append(
            {**features, "prediction": prediction, "confidence": confidence, "id": row_id}
        )
        self.latency.labels(self.model.name).observe(time.perf_counter() - t0)
        return web.json_response({"id": row_id, "prediction": prediction})

    async def metrics(self, request: web.Request) -> web.Response:
        """GET /metrics: this server's own Prometheus metrics."""
        return web.Response(
            body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    def drifted(self) -> bool:
        """Whether the generated traffic has switched to the drifted distribution."""
        return time.monotonic() - self.started >= self.args.drift_after

    async def load(self, session: ClientSession, client: int) -> None:
        """One virtual client: a request, a pause, forever."""
        rng = np.random.default_rng(1000 + client)
        url = f"http://127.0.0.1:{self.args.port}/predict"
        pause = self.args.clients / self.args.rps
        while True:
            (row,) = sample_features(rng, self.drifted(), 1)
            with contextlib.suppress(ClientError, asyncio.TimeoutError):
                async with session.post(url, json=row) as resp:
                    await resp.read()
            await asyncio.sleep(pause * rng.uniform(0.5, 1.5))

    async def put_reference(self, session: ClientSession, reference: list[dict[str, Any]]) -> None:
        """PUT the training data as the model's reference, retrying until the agent takes it."""
        url = f"{self.args.agent}/api/v1/models/{self.model.name}/reference"
        while True:
            try:
                async with session.put(url, json={"rows": reference}) as resp:
                    if resp.status in (200, 201):
                        log.info("reference of %d rows stored by the agent", len(reference))
                        return
                    log.warning("agent refused the reference: %s", await resp.text())
            except (TimeoutError, ClientError) as err:
                log.info("waiting for the agent's drift API at %s (%s)", self.args.agent, err)
            await asyncio.sleep(1)

    async def feed_drift(self, session: ClientSession) -> None:
        """PUT the reference once, then POST served rows every few seconds.

        An agent that answers 404 for the model has lost its state (a new pod, a wiped
        --state.dir): the reference is PUT again, as a real model server should do.
        """
        url = f"{self.args.agent}/api/v1/models/{self.model.name}/observations"
        reference = sample_features(np.random.default_rng(0), False, self.args.reference_rows)
        await self.put_reference(session, reference)
        first = True
        while True:
            await asyncio.sleep(self.args.feed_interval)
            # A drift test on a handful of rows says little: the first batch waits for enough.
            if not self.pending or (first and len(self.pending) < self.args.first_batch):
                continue
            rows, self.pending, first = self.pending, [], False
            try:
                async with session.post(url, json={"rows": rows}) as resp:
                    if resp.status == 404:
                        log.warning("the agent does not know the model any more: new reference")
                        await self.put_reference(session, reference)
                    elif resp.status != 200:
                        log.warning("agent refused observations: %s", await resp.text())
            except (TimeoutError, ClientError) as err:
                log.warning("could not post %d observations: %s", len(rows), err)

    async def background(self, app: web.Application) -> AsyncIterator[None]:
        """Start the load generator and the drift feed with the app, stop them with it."""
        session = ClientSession(timeout=ClientTimeout(total=5))
        tasks = [asyncio.create_task(self.load(session, i)) for i in range(self.args.clients)]
        if self.args.agent:
            tasks.append(asyncio.create_task(self.feed_drift(session)))
        yield
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await session.close()

    def app(self) -> web.Application:
        """The aiohttp application."""
        app = web.Application()
        app.router.add_post("/predict", self.predict)
        app.router.add_get("/metrics", self.metrics)
        app.cleanup_ctx.append(self.background)
        return app


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line flags."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--model", default="fraud-scorer")
    p.add_argument("--width", type=int, default=512, help="hidden width (more = slower)")
    p.add_argument("--agent", default="http://127.0.0.1:9847", help="agent URL ('' = no drift)")
    p.add_argument("--clients", type=int, default=4, help="load generator clients")
    p.add_argument("--rps", type=float, default=40.0, help="load generator requests per second")
    p.add_argument("--drift-after", type=float, default=30.0, help="seconds until inputs drift")
    p.add_argument("--feed-interval", type=float, default=2.0, help="seconds between feeds")
    p.add_argument("--reference-rows", type=int, default=1000)
    p.add_argument("--first-batch", type=int, default=300, help="rows before the first feed")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Run the server until interrupted."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="model_server: %(message)s")
    log.info(
        "serving %s on :%d; %d clients at %.0f req/s; inputs drift after %.0fs",
        args.model,
        args.port,
        args.clients,
        args.rps,
        args.drift_after,
    )
    web.run_app(Server(args).app(), host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
