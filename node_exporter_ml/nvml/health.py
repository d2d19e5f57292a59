"""Pure per-GPU health verdicts and the action to take, from one tick's NVML readings.

Eight checks (`xid memory nvlink pcie thermal power fabric lost`), each 0 pass, 1 warn or
2 fail, after DCGM's health watches; and one recommended action, the strongest of NVML's
GPU recovery action field, the XID catalog's immediate action for the XIDs seen, and the
other checks' actions. No I/O, no clocks: the collector passes what it read and remembers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

PASS, WARN, FAIL = 0, 1, 2
CHECKS: tuple[str, ...] = ("xid", "memory", "nvlink", "pcie", "thermal", "power", "fabric", "lost")
ACTIONS: tuple[str, ...] = (
    "none",
    "restart_application",
    "reset_gpu",
    "drain_and_reset",
    "reboot_node",
    "contact_support",
)
"""Weakest first: the recommended action is the highest-ranked pending one."""
_RANK = {a: i for i, a in enumerate(ACTIONS)}

# NVIDIA's XID catalog (Ampere and newer; docs.nvidia.com/deploy/xid-errors), the
# immediate-action bucket mapped onto our actions, and the check level (DCGM's FAIL for the
# XIDs it always fails on, else WARN). Application XIDs (13, 31, 43, ...) are not a hardware
# fault: restart_application and warn. 43's bucket is IGNORE, but the application it hit
# stopped, so it is restarted like the others. 45 follows another XID, 154 only says that the
# recovery action field changed (read that field instead): both warn with no action.
XID_CATALOG: Mapping[int, tuple[int, str]] = {
    13: (WARN, "restart_application"),
    31: (WARN, "restart_application"),
    32: (WARN, "restart_application"),
    43: (WARN, "restart_application"),
    45: (WARN, "none"),
    48: (FAIL, "reset_gpu"),
    61: (FAIL, "contact_support"),
    62: (FAIL, "reset_gpu"),
    63: (WARN, "none"),
    64: (FAIL, "reset_gpu"),
    68: (WARN, "restart_application"),
    69: (WARN, "restart_application"),
    74: (FAIL, "reset_gpu"),
    79: (FAIL, "reboot_node"),
    92: (WARN, "none"),
    94: (WARN, "restart_application"),
    95: (FAIL, "reset_gpu"),
    109: (WARN, "reset_gpu"),
    119: (FAIL, "reset_gpu"),
    120: (FAIL, "reset_gpu"),
    121: (WARN, "none"),
    140: (FAIL, "reset_gpu"),
    143: (FAIL, "reset_gpu"),
    **dict.fromkeys(range(144, 151), (FAIL, "reset_gpu")),
    154: (WARN, "none"),
    155: (FAIL, "reset_gpu"),
    156: (FAIL, "reset_gpu"),
    158: (FAIL, "reset_gpu"),
}
WATCHED_XIDS: tuple[int, ...] = tuple(sorted(XID_CATALOG))
"""The XIDs whose counters start at 0 on every GPU (others appear when they happen)."""
UNKNOWN_XID = (WARN, "none")

APP_XID_HOLD_SECONDS = 600.0
"""How long an XID whose action is restart_application (or none) keeps its verdict.

A restarted application is not observable; hardware XIDs are held until the GPU resets
(it is lost and answers again, or its volatile ECC counters start over) or the agent
restarts (a rebooted node starts clean).
"""

# NVML_GPU_RECOVERY_ACTION_* (field NVML_FI_DEV_GET_GPU_RECOVERY_ACTION, R570+).
RECOVERY_ACTIONS: Mapping[int, tuple[int, str]] = {
    0: (PASS, "none"),
    1: (FAIL, "reset_gpu"),  # GPU_RESET
    2: (FAIL, "reboot_node"),  # NODE_REBOOT
    3: (WARN, "drain_and_reset"),  # DRAIN_P2P: stop P2P work, then query again
    4: (FAIL, "drain_and_reset"),  # DRAIN_AND_RESET
    5: (FAIL, "drain_and_reset"),  # RECOVER_IMEX_DOMAIN (our reading: drain, restart IMEX)
    6: (FAIL, "reset_gpu"),  # BUS_RESET
    7: (FAIL, "reboot_node"),  # SYSTEM_REBOOT
}

# Fabric (nvmlDeviceGetGpuFabricInfoV): states, health summary, and the health-mask fields
# (shift, width mask) whose value 1 means TRUE.
FABRIC_NOT_SUPPORTED, FABRIC_NOT_STARTED, FABRIC_IN_PROGRESS, FABRIC_COMPLETED = 0, 1, 2, 3
SUMMARY_UNHEALTHY, SUMMARY_LIMITED = 2, 3
_MASK_TRUE = 1
_MASK_DEGRADED_BW = (0, 3)
_MASK_ROUTE_RECOVERY = (2, 3)
_MASK_ROUTE_UNHEALTHY = (4, 3)
_MASK_ACCESS_TIMEOUT_RECOVERY = (6, 3)
_MASK_INCORRECT_CONFIGURATION = (8, 15)  # 1 none, 2-8 a reason
_MASK_GFM_STATE = (14, 3)  # 1 connected, 2 disconnected
_GFM_DISCONNECTED = 2

RETIRED_PAGES_FAIL = 63  # DCGM: retired pages >= 63 fails (pre-Ampere page retirement)
REMAPPED_UNC_WARN = 512  # DCGM: uncorrectable remaps >= 512 warns
NVLINK_CRC_FAIL_PER_SECOND = 100.0  # DCGM: CRC errors >= 100/s fail, fewer warn
PCIE_REPLAYS_WARN_PER_MINUTE = 16.0  # DCGM's BER 1e-12 budget for Gen4 x16: ceil(0.96 x 16)
NVLINK_ACTIVE = 1


@dataclass(frozen=True, slots=True)
class FabricInfo:
    """nvmlDeviceGetGpuFabricInfoV: state, status (an NVML return code), mask, summary."""

    state: int
    status: int = 0
    health_mask: int | None = None
    health_summary: int | None = None


@dataclass(frozen=True, slots=True)
class HealthInputs:
    """What one tick read of one GPU that bears on its health (None: not supported here).

    `at` is the collector's monotonic clock in seconds; `xid_ages` maps each XID seen since
    the GPU last reset to the seconds since it was last raised; `nvlink_*_total` are the
    NVML totals over all links; `nvlink_down` lists links that were active and are not now.
    """

    index: int
    uuid: str
    at: float = 0.0
    lost: bool = False
    xid_ages: Mapping[int, float] = field(default_factory=dict)
    recovery_action: int | None = None
    dbe_volatile: float | None = None
    remap_pending: float | None = None
    remap_failure: float | None = None
    remapped_uncorrectable: float | None = None
    retired_dbe: float | None = None
    retired_sbe: float | None = None
    retired_pending: float | None = None
    nvlink_crc_total: float | None = None
    nvlink_replay_total: float | None = None
    nvlink_recovery_total: float | None = None
    nvlink_down: frozenset[int] = frozenset()
    nvlink_links: int = 0
    pcie_replays_total: float | None = None
    clock_events: frozenset[str] = frozenset()
    power_watts: float | None = None
    fabric: FabricInfo | None = None


@dataclass(frozen=True, slots=True)
class Finding:
    """One reason behind a verdict: the check, its level, the action it asks for, why."""

    check: str
    level: int
    action: str
    reason: str


@dataclass(frozen=True, slots=True)
class GpuHealth:
    """The verdict of one GPU: a level per applicable check and the recommended action."""

    index: int
    uuid: str
    checks: Mapping[str, int]
    action: str
    findings: tuple[Finding, ...] = ()


def _rate(now: float | None, before: float | None, dt: float | None) -> tuple[float, float] | None:
    """(increase, per second) of a counter between two ticks; None without both or on reset."""
    if now is None or before is None or dt is None or dt <= 0 or now < before:
        return None
    return now - before, (now - before) / dt


def _mask(mask: int, where: tuple[int, int]) -> int:
    shift, width = where
    return (mask >> shift) & width


def xid_findings(ages: Mapping[int, float]) -> list[Finding]:
    """Findings of the XIDs raised since the GPU's last reset (app XIDs expire)."""
    out = []
    for xid, age in sorted(ages.items()):
        level, action = XID_CATALOG.get(xid, UNKNOWN_XID)
        expires = level < FAIL and action in ("none", "restart_application")
        if expires and age > APP_XID_HOLD_SECONDS:
            continue
        out.append(Finding("xid", level, action, f"XID {xid}"))
    return out


def memory_findings(h: HealthInputs) -> list[Finding]:
    """DBE volatile, row remapping (Ampere+) and page retirement (before Ampere)."""
    out = []
    if h.dbe_volatile:
        out.append(Finding("memory", FAIL, "reset_gpu", "volatile double-bit ECC errors"))
    if h.remap_failure:
        out.append(Finding("memory", FAIL, "contact_support", "row remapping failed"))
    if h.remap_pending:
        out.append(Finding("memory", WARN, "reset_gpu", "row remapping pending a reset"))
    if h.remapped_uncorrectable is not None and h.remapped_uncorrectable >= REMAPPED_UNC_WARN:
        out.append(Finding("memory", WARN, "none", "many rows remapped for uncorrectable errors"))
    retired = (h.retired_dbe or 0) + (h.retired_sbe or 0)
    if retired >= RETIRED_PAGES_FAIL:
        out.append(Finding("memory", FAIL, "contact_support", f"{retired:g} pages retired"))
    if h.retired_pending:
        out.append(Finding("memory", WARN, "reset_gpu", "page retirement pending a reset"))
    return out


def nvlink_findings(h: HealthInputs, previous: HealthInputs | None) -> list[Finding]:
    """Links down; replay/recovery errors since the last tick; CRC error rate."""
    out = []
    if h.nvlink_down:
        links = ",".join(map(str, sorted(h.nvlink_down)))
        out.append(Finding("nvlink", FAIL, "reboot_node", f"NVLink down: {links}"))
    if previous is None:
        return out
    dt = h.at - previous.at
    for what, now, before in (
        ("replay", h.nvlink_replay_total, previous.nvlink_replay_total),
        ("recovery", h.nvlink_recovery_total, previous.nvlink_recovery_total),
    ):
        rate = _rate(now, before, dt)
        if rate is not None and rate[0] >= 1:
            out.append(Finding("nvlink", FAIL, "reset_gpu", f"NVLink {what} errors"))
    crc = _rate(h.nvlink_crc_total, previous.nvlink_crc_total, dt)
    if crc is not None and crc[1] >= NVLINK_CRC_FAIL_PER_SECOND:
        out.append(Finding("nvlink", FAIL, "reset_gpu", "NVLink CRC error rate"))
    elif crc is not None and crc[0] > 0:
        out.append(Finding("nvlink", WARN, "none", "NVLink CRC errors"))
    return out


def pcie_findings(h: HealthInputs, previous: HealthInputs | None) -> list[Finding]:
    """PCIe replays per minute above the link's bit-error budget."""
    if previous is None:
        return []
    rate = _rate(h.pcie_replays_total, previous.pcie_replays_total, h.at - previous.at)
    if rate is not None and rate[1] * 60 > PCIE_REPLAYS_WARN_PER_MINUTE:
        return [Finding("pcie", WARN, "none", "PCIe replay rate")]
    return []


def thermal_findings(h: HealthInputs) -> list[Finding]:
    """Thermal slowdown: software warns; hardware (the GPU protecting itself) fails."""
    if "hw_thermal_slowdown" in h.clock_events:
        return [Finding("thermal", FAIL, "none", "hardware thermal slowdown")]
    if "sw_thermal_slowdown" in h.clock_events:
        return [Finding("thermal", WARN, "none", "software thermal slowdown")]
    return []


def power_findings(h: HealthInputs) -> list[Finding]:
    """Power brake or hardware slowdown (external signals: PSU, cabling), unreadable power."""
    out = []
    if "hw_power_brake_slowdown" in h.clock_events:
        out.append(Finding("power", WARN, "none", "hardware power brake"))
    if "hw_slowdown" in h.clock_events:
        out.append(Finding("power", WARN, "none", "hardware slowdown"))
    if h.power_watts is None and not h.lost:
        out.append(Finding("power", WARN, "none", "power unreadable"))
    return out


def fabric_findings(f: FabricInfo) -> list[Finding]:
    """Fabric manager state, registration status, health mask and summary."""
    out = []
    if f.state == FABRIC_NOT_STARTED:
        out.append(Finding("fabric", FAIL, "drain_and_reset", "fabric manager not started"))
    elif f.state == FABRIC_IN_PROGRESS:
        out.append(Finding("fabric", WARN, "none", "fabric training in progress"))
    elif f.state == FABRIC_COMPLETED and f.status != 0:
        out.append(
            Finding("fabric", FAIL, "drain_and_reset", f"fabric registration failed ({f.status})")
        )
    mask = f.health_mask
    if mask:
        for where, level, action, reason in (
            (_MASK_ROUTE_UNHEALTHY, FAIL, "drain_and_reset", "fabric route unhealthy"),
            (_MASK_DEGRADED_BW, FAIL, "drain_and_reset", "fabric bandwidth degraded"),
            (_MASK_ROUTE_RECOVERY, WARN, "none", "fabric route recovery"),
            (_MASK_ACCESS_TIMEOUT_RECOVERY, WARN, "none", "fabric access timeout recovery"),
        ):
            if _mask(mask, where) == _MASK_TRUE:
                out.append(Finding("fabric", level, action, reason))
        if _mask(mask, _MASK_INCORRECT_CONFIGURATION) > 1:
            out.append(Finding("fabric", FAIL, "contact_support", "fabric configuration wrong"))
        if _mask(mask, _MASK_GFM_STATE) == _GFM_DISCONNECTED:
            out.append(Finding("fabric", FAIL, "drain_and_reset", "fabric manager disconnected"))
    if f.health_summary == SUMMARY_UNHEALTHY:
        out.append(Finding("fabric", FAIL, "drain_and_reset", "fabric unhealthy"))
    elif f.health_summary == SUMMARY_LIMITED:
        out.append(Finding("fabric", WARN, "none", "fabric limited capacity"))
    return out


def recovery_findings(action: int | None) -> list[Finding]:
    """NVML's own GPU recovery action (values it added after ours: contact support)."""
    if action is None or action == 0:
        return []
    level, name = RECOVERY_ACTIONS.get(action, (FAIL, "contact_support"))
    # Not a check of its own: the driver's verdict is about the GPU as a whole, which DCGM
    # files under its DRIVER watch; it shows in `xid` (XID 154 announces it).
    return [Finding("xid", level, name, f"recovery action {action}")]


def strongest(actions: Iterable[str]) -> str:
    """The highest-ranked action (none when there is none)."""
    return max(actions, key=_RANK.__getitem__, default="none")


def assess(h: HealthInputs, previous: HealthInputs | None = None) -> GpuHealth:
    """The verdict of one GPU this tick; `previous` (same GPU, last tick) gives rates.

    A lost GPU fails `lost`, keeps its XID verdicts and asks for a reboot (gpud's
    REBOOT_SYSTEM for a GPU that fell off the bus); its other checks are not reported.
    """
    if previous is not None and (previous.uuid != h.uuid or previous.lost or h.lost):
        previous = None
    findings = xid_findings(h.xid_ages) + recovery_findings(h.recovery_action)
    if h.lost:
        findings.append(Finding("lost", FAIL, "reboot_node", "GPU is lost"))
        applicable = {"xid", "lost"}
    else:
        findings += memory_findings(h)
        findings += nvlink_findings(h, previous)
        findings += pcie_findings(h, previous)
        findings += thermal_findings(h)
        findings += power_findings(h)
        applicable = {"xid", "memory", "pcie", "thermal", "power", "lost"}
        if h.nvlink_links or any(
            v is not None
            for v in (h.nvlink_crc_total, h.nvlink_replay_total, h.nvlink_recovery_total)
        ):
            applicable.add("nvlink")
        if h.fabric is not None and h.fabric.state != FABRIC_NOT_SUPPORTED:
            applicable.add("fabric")
            findings += fabric_findings(h.fabric)
    checks = {c: PASS for c in CHECKS if c in applicable}
    for f in findings:
        checks[f.check] = max(checks.get(f.check, PASS), f.level)
    return GpuHealth(
        index=h.index,
        uuid=h.uuid,
        checks=checks,
        action=strongest(f.action for f in findings),
        findings=tuple(findings),
    )


def missing_gpu(index: int, uuid: str) -> GpuHealth:
    """The verdict of a GPU that is no longer enumerated (fewer GPUs than expected)."""
    finding = Finding("lost", FAIL, "reboot_node", "GPU no longer enumerated")
    return GpuHealth(index, uuid, {"lost": FAIL}, "reboot_node", (finding,))
