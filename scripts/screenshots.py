"""The README's pictures: the landing page and the drift page in headless Chromium, and a
sample of /metrics, from a running demo (`make screenshots` runs it from examples/demo.py).

    python scripts/screenshots.py AGENT_URL MODEL [--out docs/img]

Writes landing-page.png, drift-page.png and metrics-sample.txt into --out and checks that
neither page rendered blank.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tools.browser import screenshot  # noqa: E402

# The families shown in the README's /metrics sample: one of each kind a reader meets first.
SAMPLE = re.compile(
    r"^(?:# (?:HELP|TYPE) )?(nodeml_(?:collector_success|serving_request_latency_seconds"
    r"|serving_requests_per_second|serving_latency_cause|process_cpu_seconds_total"
    r"|process_resident_memory_bytes|drift_score|dataset_drift_share|node_load1"
    r"|node_memory_available_bytes|snapshot_timestamp_seconds))\b"
)


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return str(resp.read().decode())


def metrics_sample(text: str) -> str:
    """The sample families of an exposition, HELP and TYPE kept, in their order."""
    return "".join(line + "\n" for line in text.splitlines() if SAMPLE.match(line))


def not_blank(png: Path) -> None:
    """Fail when the PNG is missing or too small to hold a rendered page."""
    data = png.read_bytes() if png.exists() else b""
    if not data.startswith(b"\x89PNG") or len(data) < 10_000:
        raise SystemExit(f"{png}: no page rendered ({len(data)} bytes)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("agent_url")
    ap.add_argument("model")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    # Let every collector of the demo report at least once more before the landing page.
    time.sleep(2)
    pages = {
        "landing-page.png": (f"{args.agent_url}/", (1000, 560)),
        "drift-page.png": (f"{args.agent_url}/drift/{args.model}", (1000, 1200)),
    }
    for name, (url, size) in pages.items():
        stderr = screenshot(url, args.out / name, size)
        if not (args.out / name).exists():
            print(stderr[-2000:], file=sys.stderr)
        not_blank(args.out / name)
        print(f"wrote {args.out / name}")
    sample = metrics_sample(get(f"{args.agent_url}/metrics"))
    (args.out / "metrics-sample.txt").write_text(sample)
    print(f"wrote {args.out / 'metrics-sample.txt'} ({sample.count(chr(10))} lines)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
