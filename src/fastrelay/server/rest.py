"""The HTTP API handlers (HTTP_API.md §3, RELAY_EXTRAS.md §2–§3, §6).

Order of checks for app routes: route → app exists (404) → app enabled (403) → signature (401)
→ rate limit (429) → body validation (400/413) → action. Every failure is a :class:`RestError`
turned into ``{"error", "code"}`` with the right status in one place (:meth:`RestApi.guard`).

Rate limits (HTTP_API.md §3.9, soketi's semantics, per app on this node): every signed GET costs
one point of ``max_read_req_per_sec``; a publish costs one point of ``max_backend_events_per_sec``
per channel of each event (the raw ``channels`` array length, else 1 for ``channel``), summed over
a batch. The points are counted from the parsed body *before* it is validated, so the limit is
checked in its place in the order above: a body that is not JSON costs 1 point and, if the limit
lets it through, gets its 400 next. Requests the limit lets through (including those that then
fail validation) carry ``X-RateLimit-Limit``, ``X-RateLimit-Remaining`` and ``Retry-After``; a
refused one gets ``429 {"error":"Too many requests.","code":429}`` with the same three headers.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import orjson

from .. import _accel
from ..apps.base import AppManager
from ..cluster.base import ClusterUnavailable
from ..config import App, Config
from ..errors import RestError
from ..eventlog import EventLog
from ..history import HistoryStore, parse_history_query
from ..hub.hub import Hub
from ..protocol import auth
from ..protocol.channels import USER_CHANNEL_PREFIX, channel_kind, validate_channel_name
from ..wire.codec import json_dumps, nested_too_deep
from .ratelimit import RateLimiter
from .routes import EMPTY_OK, Request, Response, Router, error_response, json_response

__all__ = ["RestApi"]

log = logging.getLogger("fastrelay.rest")

_SOCKET_ID = re.compile(r"\d+\.\d+")
_USER_ID = re.compile(r"[-a-zA-Z0-9_=@,.;]+")
_OK_TEXT = Response(200, b"OK", "text/plain")
_READ, _BACKEND = "read", "backend"  # the two rate-limited budgets of an app
_Headers = tuple[tuple[str, str], ...]
_Answer = Response | Awaitable[Response]  # handlers that ask the cluster answer later


@dataclass(slots=True)
class _Publish:
    """One validated event of a publish request (not frozen: that makes creating one slower)."""

    name: str
    channels: tuple[str, ...]
    data: str
    socket_id: str | None
    info: frozenset[str]
    data_size: int  # of data as UTF-8


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise RestError(400, "The received data is incorrect") from None
    # Too deep to write back out (codec.MAX_JSON_DEPTH): refused like any unreadable body.
    if not isinstance(value, dict) or nested_too_deep(value, body):
        raise RestError(400, "The received data is incorrect")
    return value


def _one_point(request: Request) -> int:
    return 1


def _publish_points(items: Any) -> int:
    """soketi's count for events: channels per event, at least 1 each; 1 for a non-list."""
    if not isinstance(items, list):
        return 1
    total = 0
    for item in items:
        channels = item.get("channels") if isinstance(item, dict) else None
        total += len(channels) if isinstance(channels, list) and channels else 1
    return max(1, total)


def _body_or_none(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return None


def _event_points(request: Request) -> int:
    return _publish_points([_body_or_none(request.body)])


def _batch_points(request: Request) -> int:
    body = _body_or_none(request.body)
    return _publish_points(body.get("batch") if isinstance(body, dict) else None)


def _with_headers(response: Response, headers: _Headers) -> Response:
    if not headers:
        return response
    # A copy: handlers may hand out shared Response constants.
    return dataclasses.replace(response, headers=response.headers + headers)


_NO_INFO: frozenset[str] = frozenset()


def _info(value: Any) -> frozenset[str]:
    if not isinstance(value, str):
        return _NO_INFO
    return frozenset(part.strip() for part in value.split(",") if part.strip())


def _memory_usage() -> dict[str, float]:
    """soketi's ``/accept-traffic`` memory block: this process's resident set vs physical memory."""
    try:
        page = os.sysconf("SC_PAGE_SIZE")
        total = os.sysconf("SC_PHYS_PAGES") * page
        with open("/proc/self/statm") as statm:
            used = int(statm.read().split()[1]) * page
    except (OSError, ValueError, AttributeError):  # not Linux: nothing cheap and exact to report
        return {"usedSize": 0, "totalSize": 0, "percentUsage": 0}
    return {"usedSize": used, "totalSize": total, "percentUsage": round(used / total * 100, 2)}


class RestApi:
    """Serves the HTTP API of one node from its hub and app manager."""

    def __init__(
        self,
        config: Config,
        apps: AppManager,
        hub: Hub,
        *,
        is_closing: Callable[[], bool],
        event_log: EventLog,
        history: HistoryStore | None = None,
        wall_clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._config = config
        self._apps = apps
        self._hub = hub
        self._adapter = hub.adapter
        self._is_closing = is_closing
        self._event_log = event_log
        self._history = history
        self._now = wall_clock
        self._limiter = RateLimiter(monotonic)

    def router(self) -> Router:
        prefix = self._config.path_prefix.rstrip("/")
        router = Router()
        read = (_READ, _one_point)
        event = (_BACKEND, _event_points)
        batch = (_BACKEND, _batch_points)
        user_event = (_BACKEND, _one_point)  # one channel: one point
        routes: list[tuple[str, str, Callable[[Request], _Answer]]] = [
            ("GET", "/", self.root),
            ("GET", "/health", self.health),
            ("GET", "/ready", self.ready),
            ("GET", "/up", self.up),
            ("GET", "/stats", self.stats),
            ("GET", "/accept-traffic", self.accept_traffic),
            ("POST", "/apps/{app_id}/events", self.guard(self.trigger, event)),
            ("POST", "/apps/{app_id}/batch_events", self.guard(self.trigger_batch, batch)),
            ("POST", "/apps/{app_id}/events/batch", self.guard(self.trigger_batch, batch)),
            ("GET", "/apps/{app_id}/channels", self.guard(self.list_channels, read)),
            ("GET", "/apps/{app_id}/channels/{channel}", self.guard(self.channel_info, read)),
            (
                "GET",
                "/apps/{app_id}/channels/{channel}/users",
                self.guard(self.channel_users, read),
            ),
            ("GET", "/apps/{app_id}/channels/{channel}/events", self.guard(self.history, read)),
            (
                "POST",
                "/apps/{app_id}/users/{user_id}/terminate_connections",
                self.guard(self.terminate),
            ),
            ("POST", "/users/{user_id}/terminate_connections", self.guard(self.terminate)),
            (
                "POST",
                "/apps/{app_id}/users/{user_id}/events",
                self.guard(self.send_to_user, user_event),
            ),
            ("POST", "/apps/{app_id}/auth", self.guard(self.authorize)),
            ("GET", "/apps/{app_id}/connections", self.guard(self.connections, read)),
            ("GET", "/apps/{app_id}/events/log", self.guard(self.event_log, read)),
        ]
        for method, pattern, handler in routes:
            router.add(method, prefix + pattern, handler)
        return router

    # -- plumbing ----------------------------------------------------------------------------

    def guard(
        self,
        handler: Callable[[Request, App], _Answer],
        cost: tuple[str, Callable[[Request], int]] | None = None,
    ) -> Callable[[Request], _Answer]:
        """Find and authenticate the app, charge its rate limit (``cost``: which budget, and
        the request's points), run the handler, turn RestError into a response."""

        budget, points = cost if cost is not None else (None, _one_point)
        authenticate = auth.authenticate_request

        def run(request: Request) -> _Answer:
            try:
                app = self._find_app(request)
            except RestError as exc:
                return error_response(exc.status, exc.message, tuple(exc.headers.items()))
            rate: _Headers = ()
            try:
                # What _authenticate does, without its call: this runs for every API request.
                config = self._config
                authenticate(
                    app,
                    request.method,
                    request.path,
                    request.raw_query,
                    request.body,
                    now=self._now(),
                    tolerance=config.api_timestamp_tolerance,
                    path_prefix=config.path_prefix,
                )
                if budget is not None:
                    rate = self._rate_limit(request, app, budget, points)
                response = handler(request, app)
            except RestError as exc:
                return self._rejected(request, app, exc, rate)
            if response.__class__ is not Response and inspect.isawaitable(response):
                return self._answer_later(request, app, response, rate)
            return _with_headers(response, rate)  # type: ignore[arg-type]

        return run

    async def _answer_later(
        self, request: Request, app: App, pending: Awaitable[Response], rate: _Headers
    ) -> Response:
        """The rest of :meth:`guard` for handlers that ask the cluster."""
        try:
            response = await pending
        except RestError as exc:
            return self._rejected(request, app, exc, rate)
        except ClusterUnavailable as exc:
            log.warning("%s %s: cluster state unavailable: %s", request.method, request.path, exc)
            error = RestError(503, "Cluster state is unavailable: Redis cannot be reached")
            return self._rejected(request, app, error, rate)
        return _with_headers(response, rate)

    def _rejected(self, request: Request, app: App, exc: RestError, rate: _Headers) -> Response:
        self._record(
            app, "api_rejected", endpoint=request.path, status=exc.status, message=exc.message
        )
        return error_response(exc.status, exc.message, tuple(exc.headers.items()) + rate)

    def _rate_limit(
        self, request: Request, app: App, budget: str, points: Callable[[Request], int]
    ) -> _Headers:
        """Charge ``points(request)`` to the app's ``budget``; the headers for the response.

        Raises:
            RestError: 429 when the points do not fit in this second's window.
        """
        limit = app.max_read_req_per_sec if budget == _READ else app.max_backend_events_per_sec
        if limit < 0:
            return ()
        decision = self._limiter.consume((app.id, budget), points(request), limit)
        if not decision.allowed:
            raise RestError(429, "Too many requests.", dict(decision.headers()))
        return decision.headers()

    def _record(self, app: App, type_: str, **fields: Any) -> None:
        self._event_log.record(app.id, type_, int(self._now() * 1000), **fields)

    def _find_app(self, request: Request) -> App:
        app_id = request.params.get("app_id")
        if app_id is None:
            # POST /users/{id}/terminate_connections: pusher-http-python's path; app by auth_key.
            key = auth.parse_query(request.raw_query).get("auth_key")
            if key is None:
                raise RestError(401, "Missing auth parameter: auth_key")
            app = self._apps.find_by_key(key)
            if app is None:
                raise RestError(401, "Unknown auth_key")
        else:
            if "%" in app_id:
                app_id = unquote(app_id)
            app = self._apps.find_by_id(app_id)
            if app is None:
                raise RestError(404, f"The app {app_id} could not be found.")
        if not app.enabled:
            raise RestError(403, "The app is not enabled.")
        return app

    def _authenticate(self, request: Request, app: App) -> None:
        auth.authenticate_request(
            app,
            request.method,
            request.path,
            request.raw_query,
            request.body,
            now=self._now(),
            tolerance=self._config.api_timestamp_tolerance,
            path_prefix=self._config.path_prefix,
        )

    def _channel_param(self, request: Request, app: App) -> str:
        name = unquote(request.params["channel"])
        if validate_channel_name(name, app.max_channel_name_length) is not None:
            raise RestError(400, f"Invalid channel name: {name}")
        return name

    # -- unauthenticated probes --------------------------------------------------------------

    def root(self, request: Request) -> Response:
        return _OK_TEXT

    def health(self, request: Request) -> Response:
        # The body stays the spec's text; the header says which hot-path twins run (no silent
        # fallback to the pure-Python ones): "fanout=c frames=c signing=c".
        accelerated = " ".join(f"{k}={v}" for k, v in sorted(_accel.implementations().items()))
        headers = (("X-Fastrelay-Accelerated", accelerated),)
        if self._is_closing():
            return Response(503, b"CLOSING", "text/plain", headers)
        if not self._hub.adapter.healthy:
            # Still serving its own clients, so still 200: a balancer that dropped every node
            # while Redis is away would cut everyone off. The body and header say what is wrong.
            degraded = (*headers, ("X-Fastrelay-Cluster", "degraded"))
            return Response(200, b"DEGRADED", "text/plain", degraded)
        return Response(200, b"OK", "text/plain", headers)

    def ready(self, request: Request) -> Response:
        if self._is_closing():
            return Response(503, b"CLOSING", "text/plain")
        return _OK_TEXT

    def up(self, request: Request) -> Response:
        return json_response({"health": "OK"})

    def stats(self, request: Request) -> Response:
        return json_response(
            {"connections": self._hub.total_connections(), "channels": self._hub.total_channels()}
        )

    def accept_traffic(self, request: Request) -> Response:
        return json_response({"memory": _memory_usage()})

    # -- publishing (HTTP_API.md §3.1, §3.2) -------------------------------------------------

    def _parse_publish(self, app: App, item: Any) -> _Publish:
        if not isinstance(item, dict):
            raise RestError(400, "The received data is incorrect")
        name = item.get("name")
        if not isinstance(name, str) or not name:
            raise RestError(400, "The event name is required")
        if len(name) > app.max_event_name_length:
            raise RestError(
                400,
                f"The event name is too long. Maximum allowed size is {app.max_event_name_length}.",
            )
        channels = item.get("channels")
        if channels is None:
            channel = item.get("channel")
            channels = [channel] if channel is not None else None
        if not isinstance(channels, list) or not channels:
            raise RestError(400, "The channels field is required")
        unique: dict[str, None] | tuple[str] = {}
        if len(channels) == 1 and isinstance(channels[0], str):
            # One channel (the usual "channel": "…"): no dict to deduplicate it through.
            channel = channels[0]
            if validate_channel_name(channel, app.max_channel_name_length) is not None:
                raise RestError(400, f"Invalid channel name: {channel[:250]}")
            unique = (channel,)
        else:
            for channel in channels:
                if not isinstance(channel, str):
                    raise RestError(400, "Each channel must be a string")
                problem = validate_channel_name(channel, app.max_channel_name_length)
                if problem is not None:
                    raise RestError(400, f"Invalid channel name: {channel[:250]}")
                unique[channel] = None
        if len(unique) > app.max_event_channels_at_once:
            raise RestError(
                400,
                f"Cannot trigger to more than {app.max_event_channels_at_once} channels at once",
            )
        if len(unique) > 1 and any(channel_kind(c).is_encrypted for c in unique):
            raise RestError(
                400, "Cannot trigger to multiple channels when using encrypted channels"
            )
        if "data" not in item:
            raise RestError(400, "The data field is required")
        data = item["data"]
        if not isinstance(data, str):
            data = json_dumps(data).decode()  # nesting bounded by _json_object: cannot raise
        # isascii() is O(1): the length of ASCII text is its UTF-8 size, no copy needed.
        data_size = len(data) if data.isascii() else len(data.encode())
        if data_size > app.max_event_payload_bytes:
            raise RestError(
                413, f"The event data should be less than {app.max_event_payload_kb:g} KB."
            )
        socket_id = item.get("socket_id")
        if socket_id is not None and (
            not isinstance(socket_id, str) or not _SOCKET_ID.fullmatch(socket_id)
        ):
            raise RestError(400, "Invalid socket_id")
        info = item.get("info")
        return _Publish(
            name,
            unique if unique.__class__ is tuple else tuple(unique),  # type: ignore[arg-type]
            data,
            socket_id,
            _NO_INFO if info is None else _info(info),
            data_size,
        )

    def _publish(self, app: App, item: _Publish, request: Request) -> None:
        for channel in item.channels:
            self._hub.publish(app, channel, item.name, item.data, item.socket_id)
        self._event_log.record_publish(
            app.id,
            int(self._now() * 1000),
            item.name,
            item.channels,
            item.data_size,
            item.socket_id,
            request.path,
        )

    async def _channel_attributes(
        self, app: App, name: str, info: frozenset[str]
    ) -> dict[str, int]:
        counts = await self._adapter.channel(app.id, name)
        out: dict[str, int] = {}
        if "user_count" in info and channel_kind(name).is_presence:
            out["user_count"] = counts.user_count
        if "subscription_count" in info:
            out["subscription_count"] = counts.subscription_count
        return out

    def trigger(self, request: Request, app: App) -> _Answer:
        item = self._parse_publish(app, _json_object(request.body))
        self._publish(app, item, request)
        if not item.info:
            return self._answer_settled(EMPTY_OK)
        return self._trigger_info(app, item, self._adapter.settled())

    async def _trigger_info(
        self, app: App, item: _Publish, settled: Awaitable[None] | None
    ) -> Response:
        if settled is not None:
            await settled  # the counts asked for include this publish's effects elsewhere
        channels = {c: await self._channel_attributes(app, c, item.info) for c in item.channels}
        return json_response({"channels": channels})

    def trigger_batch(self, request: Request, app: App) -> _Answer:
        batch = _json_object(request.body).get("batch")
        if not isinstance(batch, list):
            raise RestError(400, "The batch field must be an array")
        if len(batch) > app.max_event_batch_size:
            raise RestError(
                400, f"Cannot batch-send more than {app.max_event_batch_size} messages at once"
            )
        items = [self._parse_publish(app, entry) for entry in batch]  # all or nothing
        for item in items:
            self._publish(app, item, request)
        if not any(item.info for item in items):
            return self._answer_settled(EMPTY_OK)
        return self._batch_info(app, items, self._adapter.settled())

    async def _batch_info(
        self, app: App, items: list[_Publish], settled: Awaitable[None] | None
    ) -> Response:
        if settled is not None:
            await settled
        batch = [
            await self._channel_attributes(app, item.channels[0], item.info) if item.info else {}
            for item in items
        ]
        return json_response({"batch": batch})

    def send_to_user(self, request: Request, app: App) -> _Answer:
        user_id = unquote(request.params["user_id"])
        if not _USER_ID.fullmatch(user_id):
            raise RestError(400, f"Invalid user id: {user_id[:250]}")
        body = _json_object(request.body)
        body["channels"] = [USER_CHANNEL_PREFIX + user_id]
        body.pop("channel", None)
        self._publish(app, self._parse_publish(app, body), request)
        return self._answer_settled(EMPTY_OK)

    def _answer_settled(self, response: Response) -> _Answer:
        """``response`` once the cluster has taken what this request sent (see settled)."""
        settled = self._adapter.settled()
        if settled is None:
            return response
        return self._after(settled, response)

    @staticmethod
    async def _after(settled: Awaitable[None], response: Response) -> Response:
        await settled
        return response

    # -- queries (HTTP_API.md §3.3–§3.5) -----------------------------------------------------

    async def list_channels(self, request: Request, app: App) -> Response:
        params = auth.parse_query(request.raw_query)
        prefix = params.get("filter_by_prefix", "")
        info = _info(params.get("info"))
        if "user_count" in info and not prefix.startswith("presence-"):
            raise RestError(400, "user_count may only be requested with filter_by_prefix=presence-")
        channels: dict[str, dict[str, int]] = {}
        for name, counts in (await self._adapter.channels(app.id, prefix)).items():
            entry = {"subscription_count": counts.subscription_count}
            if "user_count" in info:
                entry["user_count"] = counts.user_count
            channels[name] = entry
        return json_response({"channels": channels})

    async def channel_info(self, request: Request, app: App) -> Response:
        name = self._channel_param(request, app)
        info = _info(auth.parse_query(request.raw_query).get("info"))
        kind = channel_kind(name)
        if "user_count" in info and not kind.is_presence:
            raise RestError(400, "user_count may only be requested for presence channels")
        if "cache" in info and not kind.is_cache:
            raise RestError(400, "cache may only be requested for cache channels")
        counts = await self._adapter.channel(app.id, name)
        count = counts.subscription_count
        out: dict[str, Any] = {"occupied": count > 0, "subscription_count": count}
        if kind.is_presence:
            out["user_count"] = counts.user_count
        if "cache" in info:
            cached = await self._adapter.cached(app.id, name)
            out["cache"] = (
                None
                if cached is None
                else {"event": cached.event, "data": cached.data, "ttl": cached.ttl}
            )
        return json_response(out)

    async def channel_users(self, request: Request, app: App) -> Response:
        name = self._channel_param(request, app)
        if not channel_kind(name).is_presence:
            raise RestError(400, "The channel must be a presence channel.")
        with_info = auth.parse_query(request.raw_query).get("with_user_info") in ("1", "true")
        users = []
        for user_id, user_info in await self._adapter.users(app.id, name):
            entry: dict[str, Any] = {"id": user_id}
            if with_info:
                entry["user_info"] = user_info
            users.append(entry)
        return json_response({"users": users})

    async def history(self, request: Request, app: App) -> Response:
        """RELAY_EXTRAS.md §4: one page of a channel's retained events.

        From the cluster's shared store when it keeps one (Redis), else this node's.
        """
        if self._history is None:
            raise RestError(404, "Event history is disabled")
        name = self._channel_param(request, app)
        limit, before, after = parse_history_query(auth.parse_query(request.raw_query))
        now_ms = int(self._now() * 1000)
        page = await self._adapter.history(
            app.id, name, limit=limit, before=before, after=after, now_ms=now_ms
        )
        if page is None:
            page = self._history.query(
                app.id, name, limit=limit, before=before, after=after, now_ms=now_ms
            )
        return json_response(page)

    def event_log(self, request: Request, app: App) -> Response:
        """RELAY_EXTRAS.md §5: what this node did for the app, newest or after a cursor."""
        return json_response(self._event_log.query(app.id, auth.parse_query(request.raw_query)))

    async def connections(self, request: Request, app: App) -> Response:
        return json_response({"connections": await self._adapter.connections(app.id)})

    # -- users and tokens --------------------------------------------------------------------

    def terminate(self, request: Request, app: App) -> _Answer:
        user_id = unquote(request.params["user_id"])
        count = self._hub.terminate_user(app.id, user_id)
        self._record(app, "terminated", user_id=user_id, connections=count)
        return self._answer_settled(EMPTY_OK)

    def authorize(self, request: Request, app: App) -> Response:
        result = auth.authorize(
            app,
            request.body,
            request.headers.get("content-type"),
            master_key=self._config.encryption_master_key,
        )
        return json_response(result)
