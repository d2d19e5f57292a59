from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import aiohttp
import pytest

from node_exporter_ml.drift import Table
from node_exporter_ml.drift.engine.histograms import (
    category_histogram,
    column_histograms,
    numeric_histogram,
)
from node_exporter_ml.drift.page import histogram_svg
from tests.drift_helpers import make_rows
from tests.pictures import chromium, decode_png
from tools.browser import screenshot as browser_screenshot

RUNNER = Path(__file__).with_name("drift_runner.py")


def test_numeric_histogram_shares():
    h = numeric_histogram([0.0, 1.0, 2.0, 3.0], [3.0, 3.0], bins=3)
    assert h["edges"] == [0.0, 1.0, 2.0, 3.0]
    assert h["reference"] == [0.25, 0.25, 0.5]
    assert h["current"] == [0.0, 0.0, 1.0]
    constant = numeric_histogram([5.0], [5.0], bins=2)
    assert constant["edges"] == [4.5, 5.0, 5.5]
    assert constant["reference"] == [0.0, 1.0]


def test_category_histogram_pools_the_rest():
    h = category_histogram(list("aaabbc"), list("ad"), limit=2)
    assert h["categories"] == ["a", "b", "other"]
    assert h["reference"] == [0.5, pytest.approx(1 / 3), pytest.approx(1 / 6)]
    assert h["current"] == [0.5, 0.0, 0.5]


def test_column_histograms_follow_report_types():
    ref = Table.from_columns({"n": [1, 2, 3, 40, 5, 6], "c": ["x", "y", "x", "x", "y", None]})
    cur = Table.from_columns({"n": [1, 2, 2, 50, 5, 7], "c": ["x", "x", "z", "x", "x", "x"]})
    hists = column_histograms(ref, cur, {"n": {"column_type": "num"}, "c": {"column_type": "cat"}})
    assert hists["n"]["kind"] == "num"
    assert hists["c"] == category_histogram(
        ["x", "y", "x", "x", "y"], ["x", "x", "z", "x", "x", "x"]
    )


def test_svg_escapes_category_names():
    svg = histogram_svg(category_histogram(["<script>"], ["a&b"]))
    assert "<script>" not in svg
    assert "&lt;script&gt;" in svg
    assert svg.startswith("<svg")
    assert svg.endswith("</svg>")


# --- the page in a real browser ---------------------------------------------------------


async def start_runner(tmp_path: Path) -> tuple[asyncio.subprocess.Process, str]:
    """tests/drift_runner.py in a child process, and its base URL."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(RUNNER), "--state-dir", str(tmp_path / "state"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 20)
    assert line.startswith(b"LISTENING "), line
    return proc, f"http://127.0.0.1:{int(line.split()[1])}"


async def screenshot(url: str, tmp_path: Path, size: tuple[int, int]) -> Screenshot:
    """The page at `url` as headless Chromium draws it in a `size` window."""
    shot = tmp_path / "page.png"
    chromium()  # fails the test clearly when Chromium is missing
    stderr = await asyncio.to_thread(browser_screenshot, url, shot, size)
    assert shot.exists(), stderr[-2000:]
    data = await asyncio.to_thread(shot.read_bytes)
    if os.environ.get("DRIFT_PAGE_SCREENSHOT"):
        await asyncio.to_thread(Path(os.environ["DRIFT_PAGE_SCREENSHOT"]).write_bytes, data)
    width, height, channels, pixels = await asyncio.to_thread(decode_png, data)
    assert (width, height) == size
    return Screenshot(width, height, channels, pixels)


class Screenshot:
    def __init__(self, width: int, height: int, channels: int, pixels: bytes) -> None:
        self.width, self.height, self.channels, self.pixels = width, height, channels, pixels

    def below(self, y: int) -> Screenshot:
        """The part of the screenshot under row `y`."""
        stride = self.width * self.channels
        return Screenshot(self.width, self.height - y, self.channels, self.pixels[y * stride :])

    def rgb(self):
        p, c = self.pixels, self.channels
        return ((p[i], p[i + 1], p[i + 2]) for i in range(0, len(p), c))

    def non_white(self) -> int:
        return sum(1 for px in self.rgb() if px != (255, 255, 255))

    def near(self, rgb: tuple[int, int, int]) -> int:
        return sum(1 for px in self.rgb() if all(abs(px[k] - rgb[k]) <= 6 for k in range(3)))


@pytest.mark.timeout(90)
async def test_page_renders_in_headless_chromium(tmp_path):
    proc, base = await start_runner(tmp_path)
    try:
        async with aiohttp.ClientSession() as http:
            ref = make_rows(500, seed=1)
            cur = make_rows(300, shift=1.0, seed=2, ids=True)
            async with http.put(f"{base}/api/v1/models/shop/reference", json={"rows": ref}) as r:
                assert r.status == 201
            async with http.post(
                f"{base}/api/v1/models/shop/observations", json={"rows": cur}
            ) as r:
                assert r.status == 200
            labels = [{"id": row["id"], "label": "ok"} for row in cur[:100]]
            async with http.post(f"{base}/api/v1/models/shop/labels", json={"labels": labels}) as r:
                assert r.status == 200
            async with http.get(f"{base}/drift/shop") as r:
                assert r.status == 200
                assert r.content_type == "text/html"
                page = await r.text()
        assert "<script" not in page
        assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
        assert page.count("<svg") >= 4  # three features and the confidence histogram
        for name in ("amount", "country", "items", "Dataset drift detected", "accuracy"):
            assert name in page
        shot = await screenshot(f"{base}/drift/shop", tmp_path, (1000, 900))
    finally:
        proc.kill()
        await proc.wait()
    n = shot.width * shot.height
    non_white = await asyncio.to_thread(shot.non_white)
    assert non_white > n * 0.02, f"page looks blank: {non_white} of {n} pixels not white"
    # The drift verdict is shaded and the reference/current bars are drawn in their colours.
    assert await asyncio.to_thread(shot.near, (0x4C, 0x78, 0xA8)) > 200, "no reference bars"
    assert await asyncio.to_thread(shot.near, (0xF5, 0x85, 0x18)) > 200, "no current bars"


def blended_orange(shot: Screenshot) -> int:
    """Pixels of the current colour drawn at partial opacity over white: the grid's cells."""
    count = 0
    for r, g, b in shot.rgb():
        a = (255 - b) / (255 - 0x18)
        if 0.15 < a < 0.9 and abs(g - (255 - (255 - 0x85) * a)) <= 6 and r >= 0xF5 - 6:
            count += 1
    return count


@pytest.mark.timeout(90)
async def test_regression_page_shows_predicted_vs_actual(tmp_path):
    proc, base = await start_runner(tmp_path)
    try:
        async with aiohttp.ClientSession() as http:
            rows = [{"km": i % 37 + 0.5, "prediction": 3.0 * (i % 37) + 5.0} for i in range(400)]
            body = {"rows": rows, "options": {"task": "regression"}}
            async with http.put(f"{base}/api/v1/models/eta/reference", json=body) as r:
                assert r.status == 201, await r.text()
            cur = [dict(row, id=f"t{i}") for i, row in enumerate(rows)]
            async with http.post(f"{base}/api/v1/models/eta/observations", json={"rows": cur}) as r:
                assert r.status == 200
            labels = [
                {"id": row["id"], "label": row["prediction"] + (i % 7) - 3.0}
                for i, row in enumerate(cur)
            ]
            async with http.post(f"{base}/api/v1/models/eta/labels", json={"labels": labels}) as r:
                assert r.status == 200
            async with http.get(f"{base}/drift/eta") as r:
                page = await r.text()
        for text in ("Predicted vs actual", "Error (prediction - label)", "RMSE", "MAPE / 100"):
            assert text in page
        assert "accuracy" not in page
        shot = await screenshot(f"{base}/drift/eta", tmp_path, (1000, 1600))
    finally:
        proc.kill()
        await proc.wait()
    # Under the feature charts (the top half): grid cells of several densities, the dashed
    # diagonal, and the error histogram's bars.
    labels_part = shot.below(shot.height // 2)
    assert await asyncio.to_thread(blended_orange, labels_part) > 2000, "no predicted-vs-actual"
    assert await asyncio.to_thread(labels_part.near, (0x4C, 0x78, 0xA8)) > 60, "no diagonal"
    assert await asyncio.to_thread(labels_part.near, (0xF5, 0x85, 0x18)) > 2000, "no error bars"
