"""A fake Kubernetes API server (aiohttp) for pods: paged list and a chunked watch stream.

It answers in the shapes the real API uses: a `PodList` with `metadata.resourceVersion`
and `continue`, watch events as JSON lines `{"type": ..., "object": Pod}`, BOOKMARK
events, and an `ERROR` event carrying a 410 `Status` when the resourceVersion is too old.
It can end watches (as `timeoutSeconds` does), break them mid-stream, and stop and start
again on the same port (the API server going away and coming back).
"""

from __future__ import annotations

import asyncio
import json
import ssl
from typing import Any

from aiohttp import web

from tools.ports import free_port

TOKEN = "fake-sa-token"


def pod_json(
    uid: str,
    name: str,
    namespace: str = "ml",
    *,
    node: str = "node-a",
    ip: str | None = "10.244.1.7",
    containers: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    labels: dict[str, str] | None = None,
    phase: str = "Running",
    runtime: str = "containerd",
) -> dict[str, Any]:
    """A Pod object as `kubectl get pod -o json` shows it (trimmed of what we never read)."""
    statuses = [
        {
            "name": cname,
            "containerID": f"{runtime}://{cid}",
            "image": "docker.io/vllm/vllm-openai:v0.6.3",
            "imageID": "docker.io/vllm/vllm-openai@sha256:" + "0" * 64,
            "ready": True,
            "restartCount": 0,
            "started": True,
            "state": {"running": {"startedAt": "2026-11-26T10:00:05Z"}},
        }
        for cid, cname in (containers or {}).items()
    ]
    status: dict[str, Any] = {
        "phase": phase,
        "hostIP": "192.168.1.10",
        "qosClass": "Burstable",
        "startTime": "2026-11-26T10:00:00Z",
        "containerStatuses": statuses,
        "conditions": [{"type": "Ready", "status": "True"}],
    }
    if ip:
        status["podIP"] = ip
        status["podIPs"] = [{"ip": ip}]
    return {
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": uid,
            "resourceVersion": "1",
            "creationTimestamp": "2026-11-26T10:00:00Z",
            "labels": labels or {"app": name.rsplit("-", 1)[0]},
            "annotations": annotations or {},
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "StatefulSet",
                    "name": name.rsplit("-", 1)[0],
                    "uid": "f" * 8 + "-0000-4000-8000-" + "0" * 12,
                    "controller": True,
                }
            ],
        },
        "spec": {
            "nodeName": node,
            "containers": [
                {"name": c, "image": "vllm/vllm-openai:v0.6.3"} for c in (containers or {}).values()
            ],
            "restartPolicy": "Always",
            "serviceAccountName": "default",
        },
        "status": status,
    }


class FakeApi:
    """The state of the fake API server: pods, an event history, and open watches."""

    def __init__(self, node: str = "node-a") -> None:
        self.node = node
        self.rv = 100
        self.pods: dict[str, dict[str, Any]] = {}
        self.history: list[tuple[int, str, dict[str, Any]]] = []
        self.compacted_below = 0  # watches from an older resourceVersion get 410
        self.requests: list[dict[str, str]] = []
        self.auth: list[str | None] = []
        self._changed = asyncio.Event()
        self._watches: dict[int, web.Request] = {}
        self._runner: web.AppRunner | None = None
        self.port: int | None = None
        self.end_watches_now = False
        self.garbage_lists = 0  # answer this many lists with an HTML error page
        self.ssl_context: ssl.SSLContext | None = None  # serve HTTPS (start(ssl_context=))
        self.client_cn: str | None = None  # a verified client certificate with this CN also

    # -- state changes -----------------------------------------------------------------

    def add(self, pod: dict[str, Any], event: str = "ADDED") -> None:
        """Record a pod event (ADDED, MODIFIED or DELETED) under a new resourceVersion."""
        self.rv += 1
        pod["metadata"]["resourceVersion"] = str(self.rv)
        uid = pod["metadata"]["uid"]
        if event == "DELETED":
            self.pods.pop(uid, None)
        else:
            self.pods[uid] = pod
        self.history.append((self.rv, event, json.loads(json.dumps(pod))))
        self._changed.set()

    def compact(self) -> None:
        """Forget history: a watch from any earlier resourceVersion now gets 410 Gone."""
        self.compacted_below = self.rv + 1
        self.history.clear()

    def end_watches(self) -> None:
        """End open watches cleanly, as the API server does at timeoutSeconds."""
        self.end_watches_now = True
        self._changed.set()

    def break_watches(self) -> None:
        """Cut open watch connections mid-stream."""
        for request in list(self._watches.values()):
            if request.transport is not None:
                request.transport.abort()

    # -- HTTP ------------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """GET /api/v1/pods: a list, or a watch stream with `watch=1`."""
        self.requests.append(dict(request.query))
        self.auth.append(request.headers.get("Authorization"))
        if request.headers.get("Authorization") != f"Bearer {TOKEN}" and not self._cert_ok(request):
            return web.json_response(_status(401, "Unauthorized", "Unauthorized"), status=401)
        if request.query.get("fieldSelector") != f"spec.nodeName={self.node}":
            return web.json_response(_status(400, "BadRequest", "want this node only"), status=400)
        if request.query.get("watch") in ("1", "true"):
            return await self._watch(request)
        return self._list(request)

    def _list(self, request: web.Request) -> web.Response:
        if self.garbage_lists > 0:
            self.garbage_lists -= 1
            return web.Response(
                text="<html>upstream connect error</html>", content_type="text/html"
            )
        items = sorted(self.pods.values(), key=lambda p: p["metadata"]["name"])
        limit = int(request.query.get("limit", "0") or 0) or len(items) or 1
        start = int(request.query.get("continue", "0") or 0)
        page = items[start : start + limit]
        meta: dict[str, Any] = {"resourceVersion": str(self.rv)}
        if start + limit < len(items):
            meta["continue"] = str(start + limit)
            meta["remainingItemCount"] = len(items) - start - limit
        return web.json_response(
            {"kind": "PodList", "apiVersion": "v1", "metadata": meta, "items": page}
        )

    async def _watch(self, request: web.Request) -> web.StreamResponse:
        since = int(request.query["resourceVersion"])
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        self._watches[id(request)] = request
        try:
            if since < self.compacted_below:
                status = _status(410, "Expired", f"too old resource version: {since} ({self.rv})")
                await _send(resp, {"type": "ERROR", "object": status})
                return resp
            sent = since
            self.end_watches_now = False
            while not self.end_watches_now:
                for rv, kind, pod in list(self.history):
                    if rv > sent:
                        await _send(resp, {"type": kind, "object": pod})
                        sent = rv
                if request.query.get("allowWatchBookmarks") == "true" and sent < self.rv:
                    bookmark = {
                        "kind": "Pod",
                        "apiVersion": "v1",
                        "metadata": {"resourceVersion": str(self.rv)},
                    }
                    await _send(resp, {"type": "BOOKMARK", "object": bookmark})
                    sent = self.rv
                self._changed.clear()
                await self._changed.wait()
        finally:
            self._watches.pop(id(request), None)
        return resp

    # -- lifecycle -------------------------------------------------------------------------

    def _cert_ok(self, request: web.Request) -> bool:
        """The real API server's x509 authentication: the CN of a verified client cert."""
        cert = request.transport.get_extra_info("peercert") if request.transport else None
        subject = dict(item for rdn in (cert or {}).get("subject", ()) for item in rdn)
        return self.client_cn is not None and subject.get("commonName") == self.client_cn

    async def start(self, ssl_context: ssl.SSLContext | None = None) -> str:
        """Listen on 127.0.0.1 (the same port again after a stop); the base URL."""
        self.ssl_context = ssl_context or self.ssl_context
        app = web.Application()
        app.router.add_get("/api/v1/pods", self.handle)
        self._runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self._runner.setup()
        if self.port is None:
            self.port = free_port()
        await web.TCPSite(
            self._runner, "127.0.0.1", self.port, reuse_address=True, ssl_context=self.ssl_context
        ).start()
        return self.url

    async def stop(self) -> None:
        """Break open watches and stop listening (the API server going away)."""
        self.break_watches()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def url(self) -> str:
        """The base URL (http or https)."""
        return f"{'https' if self.ssl_context else 'http'}://127.0.0.1:{self.port}"


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


async def _send(resp: web.StreamResponse, event: dict[str, Any]) -> None:
    await resp.write(json.dumps(event).encode() + b"\n")
