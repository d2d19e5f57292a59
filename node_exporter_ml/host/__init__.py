"""Readers for the host's procfs and cgroupfs, rooted at --path.procfs and --path.cgroupfs."""

from __future__ import annotations

VANISHED = (FileNotFoundError, ProcessLookupError)
"""What reading /proc/<pid> raises once the process has exited: skip that pid silently."""


class ParseError(Exception):
    """Malformed kernel text in one file; the collector that read it fails this tick."""

    def __init__(self, path: str, detail: str) -> None:
        super().__init__(f"{path}: {detail}")
        self.path = path
        self.detail = detail
