"""The typed hook by which a part of the agent serves HTTP routes of its own (the drift API).

The web app (`web.build_app`) mounts the routes of every enabled collector that is a
`RouteProvider`. It authenticates none of them itself: the one auth middleware (`webguard`)
guards them as every other route, and requires a provider's token, when it has one, of the
writes under ``/api/``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from aiohttp import web


class RouteProvider(ABC):
    """A collector that adds routes to the agent's web app."""

    @abstractmethod
    def routes(self) -> list[web.RouteDef]:
        """The routes to mount, bound to the provider's state."""

    def api_token(self) -> bytes | None:
        """The token the auth middleware requires of writes under /api/ (None: none set)."""
        return None

    def links(self) -> list[tuple[str, str]]:
        """(href, text) of the pages the landing page should link to."""
        return []
