"""Shared data and app builders for the drift service tests."""

from __future__ import annotations

import contextlib
import importlib.util
import random
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType
from typing import Any

from aiohttp import web

from node_exporter_ml.drift.service import DriftService
from node_exporter_ml.drift.web import routes
from node_exporter_ml.webguard import AUTH, Authenticator, auth_middleware


def fixture_module(name: str, path: Path) -> ModuleType:
    """A Python file of tests/fixtures (not a package), imported once under `name`."""
    module = sys.modules.get(name)
    if module is None:
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return module


def make_rows(
    n: int, *, shift: float = 0.0, seed: int = 0, ids: bool = False, start: int = 0
) -> list[dict[str, Any]]:
    """Rows with a numerical, a categorical and an integer feature, plus prediction/confidence."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        x = rng.gauss(shift, 1.0)
        row: dict[str, Any] = {
            "amount": x,
            "country": rng.choice(["de", "fr", "us"] if shift == 0 else ["de", "us", "us", "jp"]),
            "items": rng.randint(1, 30),
            "prediction": "fraud" if x > 1.0 else "ok",
            "confidence": round(min(1.0, abs(x) / 3), 3),
        }
        if ids:
            row["id"] = f"r{start + i}"
        rows.append(row)
    return rows


def app_for(service: DriftService) -> web.Application:
    """An aiohttp app holding only the drift routes, behind the agent's auth middleware."""
    app = web.Application(middlewares=[auth_middleware])
    app[AUTH] = Authenticator({}, [lambda: service.token])
    app.add_routes(routes(service))
    return app


@contextlib.asynccontextmanager
async def running_service(state_dir: str, **kwargs: Any) -> AsyncIterator[DriftService]:
    """A started DriftService without its evaluation loop (reports are evaluated on GET)."""
    service = DriftService(state_dir, **kwargs)
    await service.start(run_loop=False)
    try:
        yield service
    finally:
        await service.stop()
