from __future__ import annotations

import asyncio
import time

from node_exporter_ml.agent import Agent
from node_exporter_ml.collectors.base import CollectContext
from node_exporter_ml.sampler import Sampler
from tests.helpers import (
    CountingCollector,
    FailingCollector,
    NoDataCollector,
    SleepyAsyncCollector,
    SlowCollector,
    config,
)


def _collectors(*classes):
    ctx = CollectContext(config())
    return [c(ctx) for c in classes]


async def test_slow_and_failing_collectors_do_not_break_the_others():
    counting, slow, failing, nodata, sleepy = _collectors(
        CountingCollector, SlowCollector, FailingCollector, NoDataCollector, SleepyAsyncCollector
    )
    sampler = Sampler([counting, slow, failing, nodata, sleepy], interval=1, timeout=0.3)
    started = time.monotonic()
    snap = await sampler.tick()
    elapsed = time.monotonic() - started
    assert elapsed < 1.0, "one tick waits at most the timeout, whatever hangs"
    res = snap.results
    assert res["counting"].success
    assert res["counting"].data == {"thing0": 1.0, "thing1": 2.0, "thing2": 3.0}
    assert not res["slow"].success
    assert "timed out" in (res["slow"].error or "")
    assert not res["failing"].success
    assert res["failing"].error == "RuntimeError: device on fire"
    assert not res["nodata"].success
    assert not res["sleepy"].success

    # The hung update still holds its thread: the next tick does not queue another call.
    snap2 = await sampler.tick()
    assert snap2.results["slow"].error == "previous update still running"
    assert snap2.results["counting"].data["thing0"] == 2.0
    slow.release.set()
    await asyncio.sleep(0.05)
    snap3 = await sampler.tick()
    assert snap3.results["slow"].success
    assert snap3.results["slow"].data == "late"
    await sampler.close()


async def test_enricher_failure_keeps_the_snapshot():
    (counting,) = _collectors(CountingCollector)

    def broken(snapshot):
        raise KeyError("oops")

    def tags(snapshot):
        return snapshot.replace(derived={"tagged": True})

    sampler = Sampler([counting], interval=1, timeout=1, enrichers=[broken, tags])
    snap = await sampler.tick()
    assert snap.results["counting"].success
    assert snap.derived == {"tagged": True}
    await sampler.close()


async def test_collectors_receive_previous_snapshot():
    seen = []

    class Recorder(CountingCollector):
        name = "recorder"

        def update(self, previous):
            seen.append(previous)
            return super().update(previous)

    (rec,) = _collectors(Recorder)
    sampler = Sampler([rec], interval=1, timeout=1)
    first = await sampler.tick()
    await sampler.tick()
    assert seen == [None, first]
    await sampler.close()


async def test_agent_loop_ticks_at_interval_and_renders():
    from tests.helpers import registry

    agent = Agent(
        config("counting", interval=0.1),
        registry=registry(CountingCollector),
        process_metrics=False,
    )
    await agent.start()
    for _ in range(100):
        if agent.rendered is not None and agent.collectors[0].calls >= 3:  # type: ignore[attr-defined]
            break
        await asyncio.sleep(0.02)
    await agent.stop()
    assert agent.rendered is not None
    assert b'nodeml_collector_success{collector="counting"} 1.0' in agent.rendered.text
    assert b"nodeml_test_thing_value" in agent.rendered.text
