"""Pusher protocol rules for one client connection.

Rule 1: everything that decides how a client message is answered lives here.
Rule 2: no I/O, no clock of its own, no awaits. Time comes from the injected clock; replies and
        deliveries go through the hub, which writes to connection outlets.

Fatal errors are raised as :class:`~fastrelay.errors.PusherError`; the I/O shell turns them into
a ``pusher:error`` plus a close frame in one place.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from ..errors import ClientEventRejected, SubscriptionError, Unauthorized
from ..hub.hub import Hub
from ..hub.state import Client
from ..wire import codec
from . import auth
from .channels import USER_CHANNEL_PREFIX, ChannelKind, channel_kind, validate_channel_name

__all__ = ["Session"]

MAX_USER_ID_LENGTH = 128  # Pusher limit (PROTOCOL.md §6)
MAX_WATCHLIST = 100  # PROTOCOL.md §10.4


def _invalid_channel_data() -> SubscriptionError:
    return SubscriptionError(
        "AuthError", "Invalid presence channel_data: expected an object with a user_id", 401
    )


class Session:
    """Interprets what one connection sends; the hub carries out the shared effects."""

    __slots__ = ("_clock", "_on_authorized", "_rate_count", "_rate_window", "client", "hub")

    def __init__(
        self,
        client: Client,
        hub: Hub,
        *,
        clock: Callable[[], float],
        on_authorized: Callable[[], None] | None = None,
    ) -> None:
        self.client = client
        self.hub = hub
        self._clock = clock
        # Called once the connection has signed in or joined an authorized channel (§10.3).
        self._on_authorized = on_authorized
        self._rate_window = 0.0
        self._rate_count = 0

    @property
    def app(self) -> Any:
        return self.client.app

    def receive_message(self, payload: bytes | str) -> None:
        """Handle one WebSocket text (or binary) message.

        Raises:
            PusherError: the connection must be closed with the error's code.
        """
        message = codec.decode_client_message(payload)
        if isinstance(message, codec.ClientEvent):
            self._client_event(message)
        elif isinstance(message, codec.Ping):
            self.client.send(codec.PONG)
        elif isinstance(message, codec.Subscribe):
            self._subscribe(message)
        elif isinstance(message, codec.Unsubscribe):
            self.hub.unsubscribe(self.client, message.channel)
        elif isinstance(message, codec.SignIn):
            self._sign_in(message)
        elif isinstance(message, codec.Invalid):
            self._send_error(None, message.message)
        # Pong and Unknown: nothing to answer; liveness is the shell's business.

    def _send_error(self, code: int | None, message: str, channel: str | None = None) -> None:
        """A non-fatal ``pusher:error``; every one goes to the event log too."""
        self.client.send(codec.encode_error(code, message, channel))
        self.hub.record(
            self.client.app,
            "error_sent",
            socket_id=self.client.socket_id,
            code=code,
            message=message,
        )

    # -- pusher:subscribe (PROTOCOL.md §5.3) -----------------------------------------------

    def _subscribe(self, message: codec.Subscribe) -> None:
        name = message.channel
        try:
            self._try_subscribe(message)
        except SubscriptionError as exc:
            self.client.send(codec.encode_subscription_error(name, exc.type, exc.error, exc.status))
            self.hub.record(
                self.client.app,
                "subscription_failed",
                socket_id=self.client.socket_id,
                channel=name,
                error_type=exc.type,
                status=exc.status,
            )
            if exc.pusher_error:
                self._send_error(None, exc.error)

    def _try_subscribe(self, message: codec.Subscribe) -> None:
        app = self.client.app
        name = message.channel
        problem = validate_channel_name(name, app.max_channel_name_length)
        if problem == "too_long":
            raise SubscriptionError(
                "LimitReached",
                f"The channel name is longer than the allowed {app.max_channel_name_length} "
                "characters.",
                4009,
            )
        if problem is not None:
            raise SubscriptionError("InvalidChannel", f"Invalid channel name: {name}", 4009)
        pending = self.client.pending
        if name in self.client.channels or (pending is not None and name in pending):
            self.hub.subscribe(self.client, name)  # repeats the success, changes nothing
            return
        kind = channel_kind(name)
        presence_id: Any = None
        user_info: Any = None
        if kind.is_presence and message.channel_data is None:
            # No channel_data: nothing to sign, so an AuthError without the signature's
            # pusher:error (PROTOCOL.md §5.4 table).
            raise _invalid_channel_data()
        if kind.needs_auth:
            self._check_signature(message, kind)
        if kind.is_presence:
            presence_id, user_info = self._presence_member(message.channel_data)
        if kind is ChannelKind.USER:
            wanted = name[len(USER_CHANNEL_PREFIX) :]
            if self.client.user_id != wanted:
                raise SubscriptionError("AuthError", f"Not signed in as user {wanted}", 401)
        self.hub.subscribe(self.client, name, presence_id, user_info)
        if kind.needs_auth and self._on_authorized is not None:
            self._on_authorized()

    def _check_signature(self, message: codec.Subscribe, kind: ChannelKind) -> None:
        token = message.auth or ""
        socket_id = self.client.socket_id
        if auth.verify_channel_auth(
            self.client.app,
            socket_id,
            message.channel,
            token,
            message.channel_data,
            presence=kind.is_presence,
        ):
            return
        signed = auth.channel_auth_message(
            socket_id, message.channel, message.channel_data if kind.is_presence else None
        )
        raise SubscriptionError(
            "AuthError",
            f"Invalid signature: Expected HMAC SHA256 hex digest of {signed}, but got {token}",
            401,
            pusher_error=True,
        )

    def _presence_member(self, channel_data: str | None) -> tuple[Any, Any]:
        """Parse presence ``channel_data`` (PROTOCOL.md §6)."""
        invalid = _invalid_channel_data()
        if channel_data is None:
            raise invalid
        try:
            data = orjson.loads(channel_data)
        except orjson.JSONDecodeError:
            raise invalid from None
        # Too deep to write back out in presence hashes and member events.
        if not isinstance(data, dict) or codec.nested_too_deep(data, channel_data):
            raise invalid
        user_id = data.get("user_id")
        if isinstance(user_id, bool) or not isinstance(user_id, (str, int, float)):
            raise invalid
        if user_id == "" or len(str(user_id)) > MAX_USER_ID_LENGTH:
            raise invalid
        user_info = data.get("user_info", {})
        limit = self.client.app.max_presence_member_size_bytes
        if len(codec.json_dumps(user_info)) > limit:
            raise SubscriptionError(
                "LimitReached",
                f"The maximum size for a channel member is {limit // 1024} KB.",
                4301,
            )
        return user_id, user_info

    # -- client events (PROTOCOL.md §8) -----------------------------------------------------

    def _client_event(self, message: codec.ClientEvent) -> None:
        app = self.client.app
        channel = message.channel
        if channel is None:
            self._send_error(None, "Invalid message format")
            return
        try:
            if not app.enable_client_messages:
                raise ClientEventRejected("The app does not have client messaging enabled.")
            if not channel_kind(channel).allows_client_events:
                raise ClientEventRejected(
                    "Client events are only allowed on private and presence channels."
                )
            if channel not in self.client.channels:
                raise ClientEventRejected("The client is not a member of the specified channel.")
            if len(message.event) > app.max_event_name_length:
                raise ClientEventRejected(
                    f"Event name is too long. Maximum allowed size is {app.max_event_name_length}."
                )
            data = message.data
            size = len(data.encode()) if isinstance(data, str) else len(codec.json_dumps(data))
            if size > app.max_event_payload_bytes:
                raise ClientEventRejected(
                    f"The event data should be less than {app.max_event_payload_kb:g} KB."
                )
            if not self._within_rate():
                exc = ClientEventRejected(
                    "The rate limit for sending client events exceeded the quota."
                )
                if app.rate_limit_terminate:
                    exc.close = True
                    raise exc
                raise exc
        except ClientEventRejected as exc:
            self.hub.record(
                app,
                "client_event_rejected",
                socket_id=self.client.socket_id,
                channel=channel,
                event=message.event,
                message=exc.message,
            )
            if exc.close:
                raise
            self._send_error(exc.code, exc.message, channel)
            return
        self.hub.relay_client_event(self.client, channel, message.event, data)

    def _within_rate(self) -> bool:
        limit = self.client.app.max_client_events_per_sec
        if limit < 0:
            return True
        now = self._clock()
        if now - self._rate_window >= 1.0:
            self._rate_window = now
            self._rate_count = 0
        self._rate_count += 1
        return self._rate_count <= limit

    # -- pusher:signin (PROTOCOL.md §10.1) --------------------------------------------------

    def _sign_in(self, message: codec.SignIn) -> None:
        try:
            self._try_sign_in(message)
        except Unauthorized:
            self.hub.record(self.client.app, "signin_failed", socket_id=self.client.socket_id)
            raise

    def _try_sign_in(self, message: codec.SignIn) -> None:
        client = self.client
        if message.auth is None or message.user_data is None:
            raise Unauthorized()
        if not auth.verify_signin(client.app, client.socket_id, message.auth, message.user_data):
            raise Unauthorized()
        try:
            user = orjson.loads(message.user_data)
        except orjson.JSONDecodeError:
            raise Unauthorized() from None
        # Too deep: str() of a watchlist entry could hit Python's recursion limit.
        if not isinstance(user, dict) or codec.nested_too_deep(user, message.user_data):
            raise Unauthorized()
        user_id = user.get("id")
        if isinstance(user_id, (int, float)) and not isinstance(user_id, bool):
            user_id = str(user_id)
        if not isinstance(user_id, str) or not user_id:
            raise Unauthorized()
        if client.user_id is not None and client.user_id != user_id:
            self._send_error(None, "Connection is already signed in as another user.")
            return
        success = codec.encode_signin_success(message.user_data)
        if client.user_id is not None:
            client.send(success)  # signed in already, as this same user
        else:
            watchlist = user.get("watchlist")
            ids = [str(w) for w in watchlist] if isinstance(watchlist, list) else []
            self.hub.sign_in(client, user_id, tuple(ids[:MAX_WATCHLIST]), ack=success)
            if len(ids) > MAX_WATCHLIST:
                self._send_error(
                    4302, "Watchlist limit exceeded. Only the first 100 user IDs are accepted."
                )
        if self._on_authorized is not None:
            self._on_authorized()
