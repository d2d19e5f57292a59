"""The pods of one node as a source last saw them: a full list, then watch events (pure).

Both sources write here (the API server's list+watch, the kubelet's polled /pods); the
kube collector reads `data()`, the pods indexed by UID, container id and namespace/name.
No I/O and no clock: the caller says when each change was seen.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from node_exporter_ml.kube.pods import KubeData, PodMeta, WatchEvent

CHANGES = frozenset({"ADDED", "MODIFIED", "DELETED"})


class PodStore:
    """Pods by UID, the time of the last change, and a version that counts changes.

    `data()` is built anew only after a change, so a quiet node costs nothing per tick.
    """

    def __init__(self, *, node_name: str | None = None, source: str = "apiserver") -> None:
        self.node_name = node_name
        self.source = source
        self.synced_at: float | None = None
        self.version = 0
        self._pods: dict[str, PodMeta] = {}
        self._data: tuple[int, KubeData] | None = None

    @property
    def pods(self) -> Mapping[str, PodMeta]:
        """The pods by UID (read-only: change them through replace() or apply())."""
        return self._pods

    def replace(self, pods: Iterable[PodMeta], at: float) -> None:
        """Take a full list: every pod not in it is gone."""
        self._pods = {p.uid: p for p in pods}
        self._changed(at)

    def apply(self, event: WatchEvent, at: float) -> bool:
        """Apply one watch event; True when it changed the pods (ADDED, MODIFIED, DELETED).

        A DELETED pod the store never saw still counts as a change (the list it came
        after may have been older than the watch).
        """
        if event.pod is None or event.type not in CHANGES:
            return False
        if event.type == "DELETED":
            self._pods.pop(event.pod.uid, None)
        else:
            self._pods[event.pod.uid] = event.pod
        self._changed(at)
        return True

    def _changed(self, at: float) -> None:
        self.synced_at = at
        self.version += 1

    def data(self) -> KubeData:
        """The current pods as KubeData, indexed, with their annotation targets."""
        if self._data is not None and self._data[0] == self.version:
            return self._data[1]
        data = KubeData.build(
            self._pods, node_name=self.node_name, synced_at=self.synced_at, source=self.source
        )
        self._data = (self.version, data)
        return data
