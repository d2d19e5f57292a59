"""Headless Chromium: one screenshot of one URL, no profile left over (page tests, screenshots)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path


def chromium() -> str | None:
    """The Chromium binary (Debian's `chromium`, installed by `make test-deps`), if any."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


def screenshot(url: str, out: Path, size: tuple[int, int] = (1000, 900)) -> str:
    """Render `url` to the PNG `out` with a throwaway profile; returns Chromium's stderr.

    Raises:
        FileNotFoundError: Chromium is not installed.
    """
    exe = chromium()
    if exe is None:
        raise FileNotFoundError("chromium (Debian package chromium, `make test-deps`)")
    with tempfile.TemporaryDirectory(prefix="nodeml-chromium-") as home:
        cmd = [
            exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--hide-scrollbars", f"--user-data-dir={home}/profile",
            f"--window-size={size[0]},{size[1]}", f"--screenshot={out}", url,
        ]  # fmt: skip
        result = subprocess.run(
            cmd, capture_output=True, timeout=60, env={**os.environ, "HOME": home}, check=False
        )
    return result.stderr.decode(errors="replace")
