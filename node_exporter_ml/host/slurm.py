"""Pure parsing of a Slurm task's /proc/<pid>/environ into its job id, name, user and step.

The environment is the one at exec (proc(5)) and comes from the job's owner: every value
is bounded, decoded with replacement and stripped of control characters before it can
become a label value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

ENVIRON_LIMIT = 256 * 1024
"""Bytes of /proc/<pid>/environ read at most (ARG_MAX-sized environments are cut there)."""
VALUE_LIMIT = 128
"""Characters of a label value taken from the environment."""
_WANTED = {
    b"SLURM_JOB_ID": "job_id",
    b"SLURM_JOB_NAME": "job_name",
    b"SLURM_JOB_USER": "user",
    b"SLURM_STEP_ID": "step",
}
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_NUMBER = re.compile(r"^\d{1,10}$")


@dataclass(frozen=True, slots=True)
class SlurmEnviron:
    """What a task's environment says about its job (None: not set, or not usable)."""

    job_id: str | None = None
    job_name: str | None = None
    user: str | None = None
    step: str | None = None


def _clean(raw: bytes) -> str | None:
    text = _CONTROL.sub("", raw.decode("utf-8", "replace"))[:VALUE_LIMIT]
    return text or None


def parse_slurm_environ(data: bytes) -> SlurmEnviron:
    """The SLURM_JOB_{ID,NAME,USER} and SLURM_STEP_ID of NUL-separated `data`.

    The job id and step must be numbers (a batch or extern step's special ids, above
    2^32 - 8, are left out: its cgroup path names those steps); the first occurrence of a
    key wins, as getenv(3) finds it.
    """
    found: dict[str, str] = {}
    for entry in data[:ENVIRON_LIMIT].split(b"\0"):
        key, sep, value = entry.partition(b"=")
        name = _WANTED.get(key)
        if not sep or name is None or name in found:
            continue
        text = _clean(value)
        if text is not None:
            found[name] = text
    for name in ("job_id", "step"):
        number = found.get(name)
        if number is not None and (not _NUMBER.match(number) or int(number) >= 0xFFFFFFF8):
            del found[name]
    return SlurmEnviron(**found)
