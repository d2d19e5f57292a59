"""Async scraping of model servers: bounded concurrency, per-target timeout, body cap, gzip.

A failing target never raises: the outcome carries one of the reasons `timeout`,
`refused` (no connection, or the server dropped it), `http_<code>`, `too_large`
(body over the cap, after decompression, so a gzip bomb stops at the cap) or `parse`
(the body is not a Prometheus exposition).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import re
import time
from collections.abc import MutableMapping
from dataclasses import dataclass

import aiohttp

from node_exporter_ml.serving.parse import Labels, ParseError, parse_exposition
from node_exporter_ml.serving.profiles import GENERIC, Reading, identify_names, read_exposition

ACCEPT = "text/plain;version=0.0.4;q=1.0,application/openmetrics-text;version=1.0.0;q=0.5,*/*;q=0.1"
USER_AGENT = "node-exporter-ml"
_CHUNK = 64 * 1024
_TYPE_LINE = re.compile(r"^# TYPE ([^ \t\n]+)", re.MULTILINE)


class ScrapeError(Exception):
    """A scrape failed; `reason` is the label value of nodeml_serving_scrape_errors_total."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class ScrapeOutcome:
    """What one scrape of one target gave: a reading, or the reason it failed."""

    reading: Reading | None
    reason: str | None
    seconds: float
    detail: str = ""


async def fetch(
    session: aiohttp.ClientSession, url: str, *, limit_seconds: float, max_bytes: int
) -> bytes:
    """GET `url` and return the (decompressed) body, at most `max_bytes` of it.

    Raises:
        ScrapeError: timeout, refused, http_<code> or too_large.
    """
    try:
        async with asyncio.timeout(limit_seconds):
            async with session.get(
                url,
                headers={"Accept": ACCEPT, "Accept-Encoding": "gzip", "User-Agent": USER_AGENT},
                allow_redirects=True,
            ) as resp:
                if resp.status != 200:
                    raise ScrapeError(f"http_{resp.status}")
                declared = resp.headers.get("Content-Length")
                encoded = resp.headers.get("Content-Encoding", "identity") != "identity"
                if declared and declared.isdigit() and not encoded and int(declared) > max_bytes:
                    raise ScrapeError("too_large", f"Content-Length {declared}")
                chunks: list[bytes] = []
                size = 0
                async for chunk in resp.content.iter_chunked(_CHUNK):
                    size += len(chunk)
                    if size > max_bytes:
                        raise ScrapeError("too_large", f"over {max_bytes} bytes")
                    chunks.append(chunk)
                return b"".join(chunks)
    except TimeoutError:
        raise ScrapeError("timeout", f"no answer within {limit_seconds:g}s") from None
    except aiohttp.ClientResponseError as err:
        raise ScrapeError(f"http_{err.status}" if err.status else "refused", str(err)) from None
    except (aiohttp.ClientError, OSError) as err:
        raise ScrapeError("refused", f"{type(err).__name__}: {err}") from None


def parse_body(
    body: bytes,
    label_cache: MutableMapping[str, tuple[str, Labels]],
    model: str | None = None,
) -> Reading:
    """Decode, parse and read a scrape body (CPU work: run it off the event loop).

    Raises:
        ScrapeError: reason `parse`, when the body is not an exposition.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise ScrapeError("parse", "body is not UTF-8 text") from None
    # Identify the framework from the TYPE lines first (a C-speed scan), so that only the
    # families its profile reads are parsed; without a match, parse everything.
    profile = identify_names(_TYPE_LINE.findall(text))
    keep = None if profile is GENERIC else profile.wants
    try:
        exposition = parse_exposition(text, label_cache, keep)
    except ParseError as err:
        raise ScrapeError("parse", str(err)) from None
    return read_exposition(exposition, model, None if keep is None else profile)


def parse_info_model(body: bytes) -> str | None:
    """The model id from TGI's `GET /info` JSON (`model_id`), None if absent."""
    try:
        info = json.loads(body)
    except ValueError:
        return None
    model = info.get("model_id") if isinstance(info, dict) else None
    return model if isinstance(model, str) and model else None


class Scraper:
    """Scrapes targets with a concurrency bound; CPU work goes to one worker thread."""

    def __init__(
        self,
        *,
        timeout: float,
        max_bytes: int,
        concurrency: int,
        executor: concurrent.futures.Executor | None = None,
    ) -> None:
        self.timeout = timeout
        self.max_bytes = max_bytes
        self._semaphore = asyncio.Semaphore(max(1, concurrency))
        self._executor = executor
        self._session: aiohttp.ClientSession | None = None
        self._caches: dict[str, dict[str, tuple[str, Labels]]] = {}

    def configure(self, *, timeout: float, max_bytes: int, concurrency: int) -> None:
        """Take new limits (config reload)."""
        self.timeout, self.max_bytes = timeout, max_bytes
        self._semaphore = asyncio.Semaphore(max(1, concurrency))

    def _session_now(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300),
                auto_decompress=True,
                raise_for_status=False,
            )
        return self._session

    async def close(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    def forget(self, keep: set[str]) -> None:
        """Drop the label caches of targets no longer scraped."""
        for url in list(self._caches):
            if url not in keep:
                del self._caches[url]

    async def scrape(self, url: str, model: str | None = None) -> ScrapeOutcome:
        """Scrape and read one target; never raises for the target's faults."""
        started = time.perf_counter()
        async with self._semaphore:
            try:
                body = await fetch(
                    self._session_now(), url, limit_seconds=self.timeout, max_bytes=self.max_bytes
                )
                cache = self._caches.setdefault(url, {})
                loop = asyncio.get_running_loop()
                reading = await loop.run_in_executor(self._executor, parse_body, body, cache, model)
            except ScrapeError as err:
                return ScrapeOutcome(None, err.reason, time.perf_counter() - started, str(err))
        return ScrapeOutcome(reading, None, time.perf_counter() - started)

    async def info_model(self, url: str) -> str | None:
        """The model id a TGI server reports at `url` (its /info), None on any failure."""
        async with self._semaphore:
            try:
                body = await fetch(
                    self._session_now(), url, limit_seconds=self.timeout, max_bytes=1024 * 1024
                )
            except ScrapeError:
                return None
        return parse_info_model(body)
