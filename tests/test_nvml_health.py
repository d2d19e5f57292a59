"""Health verdicts and recommended actions (pure): one table row per condition."""

from __future__ import annotations

import pytest

from node_exporter_ml.nvml.health import (
    ACTIONS,
    APP_XID_HOLD_SECONDS,
    CHECKS,
    FAIL,
    PASS,
    WARN,
    WATCHED_XIDS,
    FabricInfo,
    HealthInputs,
    assess,
    missing_gpu,
    strongest,
)

UUID = "GPU-11111111-2222-3333-4444-555555555555"


def gpu(**kw) -> HealthInputs:
    base = {"index": 0, "uuid": UUID, "at": 100.0, "power_watts": 300.0}
    return HealthInputs(**{**base, **kw})


def mask(**fields: int) -> int:
    shifts = {"degraded_bw": 0, "route_recovery": 2, "route_unhealthy": 4, "timeout": 6,
              "config": 8, "gfm": 14}  # fmt: skip
    return sum(v << shifts[k] for k, v in fields.items())


CASES = [
    # id, inputs, previous, {check: level} expected to differ from pass, action
    ("healthy", gpu(), None, {}, "none"),
    ("XID 13 is the application's", gpu(xid_ages={13: 5.0}), None, {"xid": WARN},
     "restart_application"),
    ("XID 31 is the application's", gpu(xid_ages={31: 5.0}), None, {"xid": WARN},
     "restart_application"),
    ("XID 43 restarts the application", gpu(xid_ages={43: 5.0}), None, {"xid": WARN},
     "restart_application"),
    ("application XID expires", gpu(xid_ages={13: APP_XID_HOLD_SECONDS + 1}), None, {}, "none"),
    ("XID 48 double-bit ECC", gpu(xid_ages={48: 5.0}), None, {"xid": FAIL}, "reset_gpu"),
    ("hardware XID does not expire", gpu(xid_ages={48: 1e6}), None, {"xid": FAIL}, "reset_gpu"),
    ("XID 79 off the bus", gpu(xid_ages={79: 1.0}), None, {"xid": FAIL}, "reboot_node"),
    ("XID 61 contact support", gpu(xid_ages={61: 1.0}), None, {"xid": FAIL}, "contact_support"),
    ("unknown XID warns", gpu(xid_ages={999: 1.0}), None, {"xid": WARN}, "none"),
    ("XID 79 and 13: strongest wins", gpu(xid_ages={79: 1.0, 13: 1.0}), None,
     {"xid": FAIL}, "reboot_node"),
    ("recovery action none", gpu(recovery_action=0), None, {}, "none"),
    ("recovery action GPU_RESET", gpu(recovery_action=1), None, {"xid": FAIL}, "reset_gpu"),
    ("recovery action NODE_REBOOT", gpu(recovery_action=2), None, {"xid": FAIL}, "reboot_node"),
    ("recovery action DRAIN_P2P", gpu(recovery_action=3), None, {"xid": WARN},
     "drain_and_reset"),
    ("recovery action DRAIN_AND_RESET", gpu(recovery_action=4), None, {"xid": FAIL},
     "drain_and_reset"),
    ("recovery action SYSTEM_REBOOT", gpu(recovery_action=7), None, {"xid": FAIL},
     "reboot_node"),
    ("recovery action newer than us", gpu(recovery_action=42), None, {"xid": FAIL},
     "contact_support"),
    ("volatile DBE", gpu(dbe_volatile=1.0), None, {"memory": FAIL}, "reset_gpu"),
    ("remap pending", gpu(remap_pending=1.0), None, {"memory": WARN}, "reset_gpu"),
    ("remap failure", gpu(remap_failure=1.0), None, {"memory": FAIL}, "contact_support"),
    ("remap pending and failed", gpu(remap_pending=1.0, remap_failure=1.0), None,
     {"memory": FAIL}, "contact_support"),
    ("many uncorrectable remaps", gpu(remapped_uncorrectable=512.0), None, {"memory": WARN},
     "none"),
    ("63 retired pages", gpu(retired_dbe=40.0, retired_sbe=23.0), None, {"memory": FAIL},
     "contact_support"),
    ("62 retired pages pass", gpu(retired_dbe=40.0, retired_sbe=22.0), None, {}, "none"),
    ("retirement pending", gpu(retired_pending=1.0), None, {"memory": WARN}, "reset_gpu"),
    ("NVLink down", gpu(nvlink_links=18, nvlink_down=frozenset({3})), None, {"nvlink": FAIL},
     "reboot_node"),
    ("NVLink replay errors", gpu(nvlink_replay_total=5.0),
     gpu(at=95.0, nvlink_replay_total=4.0), {"nvlink": FAIL}, "reset_gpu"),
    ("NVLink recovery errors", gpu(nvlink_recovery_total=1.0),
     gpu(at=95.0, nvlink_recovery_total=0.0), {"nvlink": FAIL}, "reset_gpu"),
    ("NVLink CRC trickle warns", gpu(nvlink_crc_total=10.0),
     gpu(at=95.0, nvlink_crc_total=0.0), {"nvlink": WARN}, "none"),
    ("NVLink CRC 100/s fails", gpu(nvlink_crc_total=500.0),
     gpu(at=95.0, nvlink_crc_total=0.0), {"nvlink": FAIL}, "reset_gpu"),
    ("NVLink counters flat", gpu(nvlink_crc_total=7.0, nvlink_replay_total=2.0),
     gpu(at=95.0, nvlink_crc_total=7.0, nvlink_replay_total=2.0), {"nvlink": PASS}, "none"),
    ("NVLink counter reset is no error", gpu(nvlink_replay_total=0.0),
     gpu(at=95.0, nvlink_replay_total=9.0), {"nvlink": PASS}, "none"),
    ("PCIe replays above budget", gpu(pcie_replays_total=102.0),
     gpu(at=40.0, pcie_replays_total=85.0), {"pcie": WARN}, "none"),
    ("PCIe replays within budget", gpu(pcie_replays_total=100.0),
     gpu(at=40.0, pcie_replays_total=85.0), {}, "none"),
    ("software thermal slowdown", gpu(clock_events=frozenset({"sw_thermal_slowdown"})), None,
     {"thermal": WARN}, "none"),
    ("hardware thermal slowdown", gpu(clock_events=frozenset({"hw_thermal_slowdown"})), None,
     {"thermal": FAIL}, "none"),
    ("power cap is normal", gpu(clock_events=frozenset({"sw_power_cap"})), None, {}, "none"),
    ("power brake", gpu(clock_events=frozenset({"hw_power_brake_slowdown"})), None,
     {"power": WARN}, "none"),
    ("power unreadable", gpu(power_watts=None), None, {"power": WARN}, "none"),
    ("fabric completed healthy", gpu(fabric=FabricInfo(3, 0, mask(gfm=1, config=1), 1)), None,
     {"fabric": PASS}, "none"),
    ("fabric manager down", gpu(fabric=FabricInfo(1)), None, {"fabric": FAIL},
     "drain_and_reset"),
    ("fabric training", gpu(fabric=FabricInfo(2)), None, {"fabric": WARN}, "none"),
    ("fabric registration failed", gpu(fabric=FabricInfo(3, 999)), None, {"fabric": FAIL},
     "drain_and_reset"),
    ("fabric route unhealthy", gpu(fabric=FabricInfo(3, 0, mask(route_unhealthy=1))), None,
     {"fabric": FAIL}, "drain_and_reset"),
    ("fabric degraded bandwidth", gpu(fabric=FabricInfo(3, 0, mask(degraded_bw=1))), None,
     {"fabric": FAIL}, "drain_and_reset"),
    ("fabric route recovery", gpu(fabric=FabricInfo(3, 0, mask(route_recovery=1))), None,
     {"fabric": WARN}, "none"),
    ("fabric values FALSE pass", gpu(fabric=FabricInfo(3, 0, mask(route_unhealthy=2,
     degraded_bw=2, route_recovery=2, timeout=2))), None, {"fabric": PASS}, "none"),
    ("fabric bad configuration", gpu(fabric=FabricInfo(3, 0, mask(config=5))), None,
     {"fabric": FAIL}, "contact_support"),
    ("fabric manager disconnected", gpu(fabric=FabricInfo(3, 0, mask(gfm=2))), None,
     {"fabric": FAIL}, "drain_and_reset"),
    ("fabric summary unhealthy", gpu(fabric=FabricInfo(3, 0, 0, 2)), None, {"fabric": FAIL},
     "drain_and_reset"),
    ("fabric limited capacity", gpu(fabric=FabricInfo(3, 0, 0, 3)), None, {"fabric": WARN},
     "none"),
    ("no fabric on this GPU", gpu(fabric=FabricInfo(0)), None, {}, "none"),
    ("lost", gpu(lost=True, power_watts=None), None, {"lost": FAIL}, "reboot_node"),
    ("XID 79 then lost", gpu(lost=True, xid_ages={79: 3.0}), None,
     {"lost": FAIL, "xid": FAIL}, "reboot_node"),
    ("XID 48 with a DBE", gpu(xid_ages={48: 1.0}, dbe_volatile=2.0), None,
     {"xid": FAIL, "memory": FAIL}, "reset_gpu"),
]  # fmt: skip


@pytest.mark.parametrize(("inputs", "previous", "levels", "action"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])  # fmt: skip
def test_verdicts(inputs, previous, levels, action):
    got = assess(inputs, previous)
    assert got.action == action
    for check, level in levels.items():
        assert got.checks[check] == level, check
    assert {c for c, v in got.checks.items() if v} == {c for c, v in levels.items() if v}
    assert set(got.checks) <= set(CHECKS)
    for f in got.findings:
        assert f.action in ACTIONS
        assert f.reason


def test_checks_that_do_not_apply_are_absent():
    plain = assess(gpu())
    assert set(plain.checks) == {"xid", "memory", "pcie", "thermal", "power", "lost"}
    linked = assess(gpu(nvlink_links=4, fabric=FabricInfo(3)))
    assert set(linked.checks) == set(CHECKS)
    lost = assess(gpu(lost=True, nvlink_links=4, fabric=FabricInfo(3)))
    assert set(lost.checks) == {"xid", "lost"}


def test_rates_need_the_same_gpu_and_a_forward_clock():
    before = gpu(at=95.0, nvlink_replay_total=0.0)
    assert assess(gpu(nvlink_replay_total=3.0), before).checks["nvlink"] == FAIL
    other = gpu(at=95.0, uuid="GPU-other", nvlink_replay_total=0.0)
    assert assess(gpu(nvlink_replay_total=3.0), other).checks["nvlink"] == PASS
    same_time = gpu(at=100.0, nvlink_replay_total=0.0)
    assert assess(gpu(nvlink_replay_total=3.0), same_time).checks["nvlink"] == PASS
    was_lost = gpu(at=95.0, lost=True, nvlink_replay_total=0.0)
    assert assess(gpu(nvlink_replay_total=3.0), was_lost).checks["nvlink"] == PASS


def test_missing_gpu_fails_lost_and_asks_for_a_reboot():
    got = missing_gpu(3, "")
    assert (got.index, got.uuid, dict(got.checks), got.action) == (
        3, "", {"lost": FAIL}, "reboot_node",
    )  # fmt: skip


def test_action_order_and_watched_xids():
    assert strongest([]) == "none"
    assert strongest(["reset_gpu", "restart_application"]) == "reset_gpu"
    assert strongest(["reboot_node", "contact_support", "none"]) == "contact_support"
    assert {13, 31, 43, 48, 79, 94, 95, 154} <= set(WATCHED_XIDS)
    assert list(WATCHED_XIDS) == sorted(set(WATCHED_XIDS))
