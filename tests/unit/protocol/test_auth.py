"""protocol/auth.py: signed requests end to end, tokens, webhooks and the auth endpoint.

Runs on whichever signing twin the selector picked (both, across the normal and the
``FASTRELAY_NO_EXTENSIONS=1`` run); ``test_signing.py`` runs the twins side by side.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass

import orjson
import pytest

from fastrelay.config import App
from fastrelay.errors import RestError
from fastrelay.protocol import auth, signing

APP = App(id="app-id", key="app-key", secret="app-secret")
T = 1700000000
EMPTY_MD5 = "d41d8cd98f00b204e9800998ecf8427e"
MASTER_KEY = base64.b64decode("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=")


def signed_query(app: App, method: str, path: str, params: dict[str, str]) -> str:
    """A raw query string signed as an SDK signs it (values sent unescaped, as Node does)."""
    signature = signing.sign(app.secret_bytes, signing.string_to_sign(method, path, params))
    return "&".join(f"{k}={v}" for k, v in {**params, "auth_signature": signature}.items())


def default_params(body: bytes | None = None, **extra: str) -> dict[str, str]:
    params = {"auth_key": "app-key", "auth_timestamp": str(T), "auth_version": "1.0", **extra}
    if body is not None:
        params["body_md5"] = hashlib.md5(body).hexdigest()
    return params


def rest_error(excinfo: pytest.ExceptionInfo[RestError]) -> tuple[int, str]:
    return excinfo.value.status, excinfo.value.message


# -- parse_query ----------------------------------------------------------------------------------


def test_parse_query_decodes_percent_only() -> None:
    query = "a=1%2C2&B=x+y&c=%7E%20&d=%zz&e&=v&&f=%C3%A9"
    assert auth.parse_query(query) == {
        "a": "1,2",
        "b": "x+y",
        "c": "~ ",
        "d": "%zz",
        "e": "",
        "": "v",
        "f": "é",
    }


def test_parse_query_plus_as_space() -> None:
    assert auth.parse_query("a=x+y%2B&b%2Bc=1", plus_as_space=True) == {"a": "x y+", "b+c": "1"}


def test_parse_query_last_value_wins_and_names_lowercase() -> None:
    assert auth.parse_query("Info=a&INFO=b&x=1") == {"info": "b", "x": "1"}
    assert auth.parse_query("") == {}


# -- authenticate_request: every request vector, end to end ----------------------------------------


@dataclass(frozen=True)
class SignedRequest:
    id: str
    app: App
    method: str
    path: str
    query: str  # without auth_signature
    body: bytes
    body_md5: str | None  # as printed in the spec
    timestamp: int
    signature: str


S1_APP = App(id="3", key="278d425bdf160c739803", secret="7ad3773142a6692b25b8")
S2_APP = App(id="1", key="key", secret="secret")
S3_APP = App(id="1", key="f00d", secret="tofu")
BASE = f"auth_key=app-key&auth_timestamp={T}&auth_version=1.0"

S4A_BODY = b'{"name":"my-event","channel":"my-channel","data":"{\\"message\\":\\"hello\\"}"}'
S5C_BODY = (
    b'{"name": "my-event", "channels": ["my-channel"], "data": "{\\"message\\": \\"hello\\"}"}'
)
S5D_BODY = (
    b'{"batch": [{"channel": "my-channel", "name": "my-event", '
    b'"data": "{\\"message\\": \\"hello\\"}"}]}'
)
BATCH_BODY = (
    b'{"batch":[{"name":"my-event","channel":"my-channel","data":"{\\"message\\":\\"hello\\"}"}]}'
)
USER_EVENT_BODY = b'{"name":"invoice-paid","data":"{\\"id\\":7}"}'
R1_BODY = b'{"socket_id":"123.456","channel_name":"private-my-channel"}'
R2_BODY = (
    b'{"socket_id":"123.456","channel_name":"presence-room",'
    b'"channel_data":{"user_id":"user-1","user_info":{"name":"Alice"}}}'
)
R3_BODY = b"socket_id=123.456&channel_name=private-my-channel"
R4_BODY = b'{"socket_id":"123.456","channel_name":"private-encrypted-room"}'

REQUESTS = [
    SignedRequest(
        "S1",
        S1_APP,
        "POST",
        "/apps/3/events",
        "auth_key=278d425bdf160c739803&auth_timestamp=1353088179&auth_version=1.0",
        b'{"name":"foo","channels":["project-3"],"data":"{\\"some\\":\\"data\\"}"}',
        "ec365a775a4cd0599faeb73354201b6f",
        1353088179,
        "da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c",
    ),
    SignedRequest(
        "S2-get",
        S2_APP,
        "GET",
        "/some/obscure/api",
        "foo=bar&auth_key=key&auth_timestamp=1000&auth_version=1.0",
        b"",
        EMPTY_MD5,
        1000,
        "5c49f04a95eedc9028b1e0e8de7c2c7ad63504a0e3b5c145d2accaef6c14dbac",
    ),
    SignedRequest(
        "S2-post",
        S2_APP,
        "POST",
        "/some/obscure/api",
        "auth_key=key&auth_timestamp=1000&auth_version=1.0",
        b'{"foo": "bar"}',
        "94232c5b8fc9272f6f73a1e36eb68fcf",
        1000,
        "e05fa4cafee86311746ee3981d5581a5e4e87c27bbab0aeb1059e2df5c90258b",
    ),
    SignedRequest(
        "S3-body",
        S3_APP,
        "GET",
        "/event",
        "auth_key=f00d&auth_timestamp=1234567890&auth_version=1.0",
        b"example body",
        "165d5e6d7ca8f73b3853ce45addf42fc",
        1234567890,
        "a650196dc427ebe837226f8565ca9232198c6d1b9455eaa72374a9dc0b620e7b",
    ),
    SignedRequest(
        "S3-query",
        S3_APP,
        "GET",
        "/event",
        "foo=bar&baz=123454321&auth_key=f00d&auth_timestamp=1234567890&auth_version=1.0",
        b"",
        None,
        1234567890,
        "d8bdbd31911fb7400a14fbd36fd7de053494725b64400ae5856deafe304b34a9",
    ),
    SignedRequest(
        "S4a",
        APP,
        "POST",
        "/apps/app-id/events",
        BASE,
        S4A_BODY,
        "1615a707e7b476b09e397edb9cc05e9b",
        T,
        "59e7ea9c566674ffb08efff7d4d2b96c4c6aae140721a67bd66d47934d78a3b0",
    ),
    SignedRequest(
        "S4b",
        APP,
        "GET",
        "/apps/app-id/channels",
        BASE + "&filter_by_prefix=presence-&info=user_count",
        b"",
        None,
        T,
        "fd5a1b38d92aee2b7913a8cf43136cffab888ee5a097536910d6239f08eb68a2",
    ),
    SignedRequest(
        "S4c",
        APP,
        "GET",
        "/apps/app-id/channels/presence-room",
        BASE + "&info=user_count,subscription_count",
        b"",
        None,
        T,
        "63a12586312655a389c2cd2456ef12ce123cb22ece45add17de2273aaea20235",
    ),
    SignedRequest(
        "S4c-guzzle",  # PHP/Guzzle percent-encodes the query; the signature covers decoded values
        APP,
        "GET",
        "/apps/app-id/channels/presence-room",
        BASE + "&info=user_count%2Csubscription_count",
        b"",
        None,
        T,
        "63a12586312655a389c2cd2456ef12ce123cb22ece45add17de2273aaea20235",
    ),
    SignedRequest(
        "S4d",
        APP,
        "POST",
        "/apps/app-id/users/user-1/terminate_connections",
        BASE,
        b"{}",
        "99914b932bd37a50b983c5e7c90ae93b",
        T,
        "b01496ec48272aa53b79731db18e32d6cb67bbfa0bd553f1dfb1c60191939be0",
    ),
    SignedRequest(
        "S5a",
        App(id="1", key="app-key", secret="app-secret"),
        "GET",
        "/apps/1/channels",
        BASE,
        b"",
        EMPTY_MD5,
        T,
        "014b0ccda2ea13e4e7ba1aef68970577bc73e3f22909181d87ce2fe149a65f32",
    ),
    SignedRequest(
        "S5b",
        App(id="1", key="app-key", secret="app-secret"),
        "POST",
        "/users/user-1/terminate_connections",
        BASE,
        b"{}",
        "99914b932bd37a50b983c5e7c90ae93b",
        T,
        "15119d46af080cd4fd5c2238c33e616346bd7f060d8224ddf6769add535571ee",
    ),
    SignedRequest(
        "S5c",
        App(id="1", key="app-key", secret="app-secret"),
        "POST",
        "/apps/1/events",
        BASE,
        S5C_BODY,
        "dd37bf9d3d72758038c67623f0dea8e0",
        T,
        "855efc7f257cc55ce182ce881204414cb700235004ae77526d6e58a3c7855dd6",
    ),
    SignedRequest(
        "S5d",
        App(id="1", key="app-key", secret="app-secret"),
        "POST",
        "/apps/1/batch_events",
        BASE,
        S5D_BODY,
        "854b23e179730cd905f3047ecd68bf9e",
        T,
        "8b6684a9e728fa003ffbd136afa9e052ccc6c648b723a384367c39059edd0955",
    ),
    SignedRequest(
        "events-batch",
        APP,
        "POST",
        "/apps/app-id/events/batch",
        BASE,
        BATCH_BODY,
        "1aa1655cf43dbf7bee388b5f7558eb12",
        T,
        "9d46ff1e984e40f455339c8f8f9e7fed5f640220842855ddb379ad0cf35a4fc9",
    ),
    SignedRequest(
        "R1",
        APP,
        "POST",
        "/apps/app-id/auth",
        BASE,
        R1_BODY,
        "848272388f8c870abe92da4ff8c4dceb",
        T,
        "ad83181420d14f1273c25b35dc6c13f26a7a2f7efef67906216a6caaa0d7e6c7",
    ),
    SignedRequest(
        "R2",
        APP,
        "POST",
        "/apps/app-id/auth",
        BASE,
        R2_BODY,
        "bdda8499657db0c55a32679ee564417c",
        T,
        "6173c8ee0bf8e50d1871b557b2db03b831d95924e5a82054c17aa32f1531d7a5",
    ),
    SignedRequest(
        "R3",
        APP,
        "POST",
        "/apps/app-id/auth",
        BASE,
        R3_BODY,
        "2de9eb0d55c4652e3b2ec1eb4abd487a",
        T,
        "d9542add026c703b3f9d78d1620d26f41d7793eb379fe90565d3ea4eb9a6226a",
    ),
    SignedRequest(
        "R4",
        APP,
        "POST",
        "/apps/app-id/auth",
        BASE,
        R4_BODY,
        "d22a5d55ddfedc910f10cdefaa60251a",
        T,
        "cc6c52aa1e9d5772ac1313acf1acd008fc08375c40fb633d00643b08cf9c4bc9",
    ),
    SignedRequest(
        "history",
        APP,
        "GET",
        "/apps/app-id/channels/my-channel/events",
        "limit=10&before=42&" + BASE,
        b"",
        None,
        T,
        "7df645b49fd357452befb1e1bde32b7f2a0b954a90cfa5afdc8bc1ef0a65b11a",
    ),
    SignedRequest(
        "event-log",
        APP,
        "GET",
        "/apps/app-id/events/log",
        BASE + "&limit=100",
        b"",
        None,
        T,
        "3f3a62d60e8ec04f17e00d4d0337904574b3dcd0e8bb76749d66db75d1f5e690",
    ),
    SignedRequest(
        "users-events",
        APP,
        "POST",
        "/apps/app-id/users/user-1/events",
        BASE,
        USER_EVENT_BODY,
        "96189b26c5b5a3c1d726df6a9ef81d20",
        T,
        "7373adcf1c88a0a0abc55659c3b2bfb87106c86c87b0f3862c68d71bf4357b3c",
    ),
]


def raw_query(request: SignedRequest, signature: str | None = None) -> str:
    query = request.query
    if request.body_md5 is not None:
        query += f"&body_md5={request.body_md5}"
    return query + f"&auth_signature={signature or request.signature}"


@pytest.mark.parametrize("request_", REQUESTS, ids=lambda r: r.id)
def test_request_vector(request_: SignedRequest) -> None:
    if request_.body_md5 is not None:
        assert hashlib.md5(request_.body).hexdigest() == request_.body_md5
    params = auth.authenticate_request(
        request_.app,
        request_.method,
        request_.path,
        raw_query(request_),
        request_.body,
        now=request_.timestamp,
    )
    assert params["auth_signature"] == request_.signature
    assert params["auth_key"] == request_.app.key
    # the uppercase form of the same signature is accepted too
    auth.authenticate_request(
        request_.app,
        request_.method,
        request_.path,
        raw_query(request_, request_.signature.upper()),
        request_.body,
        now=request_.timestamp,
    )


@pytest.mark.parametrize("request_", REQUESTS, ids=lambda r: r.id)
def test_request_vector_wrong_signature(request_: SignedRequest) -> None:
    wrong = "0" * 64
    with pytest.raises(RestError) as excinfo:
        auth.authenticate_request(
            request_.app,
            request_.method,
            request_.path,
            raw_query(request_, wrong),
            request_.body,
            now=request_.timestamp,
        )
    params = auth.parse_query(raw_query(request_, wrong))
    expected = signing.string_to_sign(request_.method, request_.path, params).replace("\n", "\\n")
    assert rest_error(excinfo) == (
        401,
        f'Invalid signature: you should have sent HmacSHA256Hex("{expected}", '
        f'your_secret_key), but you sent "{wrong}"',
    )


def test_invalid_signature_text_s4a() -> None:
    query = f"{BASE}&body_md5=1615a707e7b476b09e397edb9cc05e9b&auth_signature=abc"
    with pytest.raises(RestError) as excinfo:
        auth.authenticate_request(APP, "POST", "/apps/app-id/events", query, S4A_BODY, now=T)
    assert rest_error(excinfo) == (
        401,
        'Invalid signature: you should have sent HmacSHA256Hex("POST\\n/apps/app-id/events\\n'
        "auth_key=app-key&auth_timestamp=1700000000&auth_version=1.0"
        '&body_md5=1615a707e7b476b09e397edb9cc05e9b", your_secret_key), but you sent "abc"',
    )
    assert "app-secret" not in excinfo.value.message


# -- authenticate_request: the rules of HTTP_API.md §2.1-§2.2 ------------------------------------


@pytest.mark.parametrize(
    "missing", ["auth_key", "auth_timestamp", "auth_version", "auth_signature"]
)
def test_missing_auth_parameter(missing: str) -> None:
    params = default_params()
    query = signed_query(APP, "GET", "/apps/app-id/channels", params)
    query = "&".join(f for f in query.split("&") if not f.startswith(missing + "="))
    with pytest.raises(RestError) as excinfo:
        auth.authenticate_request(APP, "GET", "/apps/app-id/channels", query, b"", now=T)
    assert rest_error(excinfo) == (401, f"Missing auth parameter: {missing}")


def test_unknown_auth_key() -> None:
    params = {**default_params(), "auth_key": "other-key"}
    query = signed_query(APP, "GET", "/apps/app-id/channels", params)
    with pytest.raises(RestError) as excinfo:
        auth.authenticate_request(APP, "GET", "/apps/app-id/channels", query, b"", now=T)
    assert rest_error(excinfo) == (401, "Unknown auth_key")


@pytest.mark.parametrize(
    "timestamp", ["", "abc", "1700000000.0", "1.7e9", " 1700000000", "\uff11\uff17", "9" * 31]
)
@pytest.mark.parametrize("tolerance", [600, 0])
def test_timestamp_not_an_integer(timestamp: str, tolerance: int) -> None:
    params = {**default_params(), "auth_timestamp": timestamp}
    query = signed_query(APP, "GET", "/apps/app-id/channels", params)
    with pytest.raises(RestError) as excinfo:
        auth.authenticate_request(
            APP, "GET", "/apps/app-id/channels", query, b"", now=T, tolerance=tolerance
        )
    assert rest_error(excinfo) == (
        401,
        "Invalid auth_timestamp: expected an integer (Unix seconds)",
    )


@pytest.mark.parametrize("offset", [0, 600, -600, 600.9])
def test_timestamp_within_tolerance(offset: float) -> None:
    query = signed_query(APP, "GET", "/apps/app-id/channels", default_params())
    auth.authenticate_request(APP, "GET", "/apps/app-id/channels", query, b"", now=T + offset)


@pytest.mark.parametrize(
    ("now", "shown"), [(T + 601, T + 601), (T - 601, T - 601), (T + 3600.7, T + 3600)]
)
def test_timestamp_expired(now: float, shown: int) -> None:
    query = signed_query(APP, "GET", "/apps/app-id/channels", default_params())
    with pytest.raises(RestError) as excinfo:
        auth.authenticate_request(APP, "GET", "/apps/app-id/channels", query, b"", now=now)
    assert rest_error(excinfo) == (
        401,
        f"Timestamp expired: Given timestamp ({T}) not within 600s of server time ({shown})",
    )


def test_timestamp_spec_text_and_custom_tolerance() -> None:
    params = {**default_params(), "auth_timestamp": "1699990000"}
    query = signed_query(APP, "GET", "/apps/app-id/channels", params)
    with pytest.raises(RestError) as excinfo:
        auth.authenticate_request(APP, "GET", "/apps/app-id/channels", query, b"", now=1700003600)
    assert excinfo.value.message == (
        "Timestamp expired: Given timestamp (1699990000) not within 600s "
        "of server time (1700003600)"
    )
    auth.authenticate_request(
        APP, "GET", "/apps/app-id/channels", query, b"", now=1700003600, tolerance=14000
    )


def test_tolerance_zero_disables_the_window() -> None:
    params = {**default_params(), "auth_timestamp": "1"}
    query = signed_query(APP, "GET", "/apps/app-id/channels", params)
    with pytest.raises(RestError):
        auth.authenticate_request(APP, "GET", "/apps/app-id/channels", query, b"", now=T)
    auth.authenticate_request(APP, "GET", "/apps/app-id/channels", query, b"", now=T, tolerance=0)


def test_negative_timestamp_is_an_integer() -> None:
    params = {**default_params(), "auth_timestamp": "-5"}
    query = signed_query(APP, "GET", "/x", params)
    auth.authenticate_request(APP, "GET", "/x", query, b"", now=T, tolerance=0)
    with pytest.raises(RestError, match="Timestamp expired"):
        auth.authenticate_request(APP, "GET", "/x", query, b"", now=T)


def test_body_md5_required_with_a_body() -> None:
    query = signed_query(APP, "POST", "/apps/app-id/events", default_params())
    with pytest.raises(RestError) as excinfo:
        auth.authenticate_request(APP, "POST", "/apps/app-id/events", query, S4A_BODY, now=T)
    assert rest_error(excinfo) == (401, "Missing auth parameter: body_md5")


def test_body_md5_mismatch() -> None:
    query = signed_query(APP, "POST", "/apps/app-id/events", default_params(S4A_BODY))
    with pytest.raises(RestError) as excinfo:
        auth.authenticate_request(APP, "POST", "/apps/app-id/events", query, S4A_BODY + b" ", now=T)
    assert rest_error(excinfo) == (401, "body_md5 does not match the request body")


def test_body_md5_for_an_empty_body() -> None:
    # pusher-http-python sends md5("") on GET: accepted; anything else with no body is not
    query = signed_query(APP, "GET", "/apps/app-id/channels", default_params(b""))
    assert EMPTY_MD5 in query
    auth.authenticate_request(APP, "GET", "/apps/app-id/channels", query, b"", now=T)
    query = signed_query(APP, "GET", "/apps/app-id/channels", default_params(b"{}"))
    with pytest.raises(RestError) as excinfo:
        auth.authenticate_request(APP, "GET", "/apps/app-id/channels", query, b"", now=T)
    assert rest_error(excinfo) == (401, "body_md5 does not match the request body")


def test_body_md5_uppercase_is_accepted() -> None:
    params = default_params()
    params["body_md5"] = hashlib.md5(S4A_BODY).hexdigest().upper()
    query = signed_query(APP, "POST", "/apps/app-id/events", params)
    auth.authenticate_request(APP, "POST", "/apps/app-id/events", query, S4A_BODY, now=T)


def test_checks_run_in_order() -> None:
    # a request wrong in every way reports the first rule: missing parameters, then key, ...
    with pytest.raises(RestError, match="Missing auth parameter: auth_key"):
        auth.authenticate_request(APP, "POST", "/x", "auth_timestamp=x", b"body", now=T)
    query = "auth_key=nope&auth_timestamp=x&auth_version=1.0&auth_signature=0"
    with pytest.raises(RestError, match="Unknown auth_key"):
        auth.authenticate_request(APP, "POST", "/x", query, b"body", now=T)
    query = "auth_key=app-key&auth_timestamp=1&auth_version=1.0&auth_signature=0"
    with pytest.raises(RestError, match="Timestamp expired"):
        auth.authenticate_request(APP, "POST", "/x", query, b"body", now=T)
    query = f"auth_key=app-key&auth_timestamp={T}&auth_version=1.0&auth_signature=0"
    with pytest.raises(RestError, match="body_md5"):
        auth.authenticate_request(APP, "POST", "/x", query, b"body", now=T)


def test_plus_is_retried_as_space() -> None:
    # a client that signed "presence- x" but sent the space as '+' (form-style encoding)
    params = default_params(filter_by_prefix="presence- x")
    query = signed_query(APP, "GET", "/apps/app-id/channels", params).replace(" ", "+")
    assert "presence-+x" in query
    result = auth.authenticate_request(APP, "GET", "/apps/app-id/channels", query, b"", now=T)
    assert result["filter_by_prefix"] == "presence- x"


def test_plus_is_literal_first() -> None:
    # Node and Python sign the raw value: '+' is a '+'
    params = default_params(filter_by_prefix="a+b")
    query = signed_query(APP, "GET", "/apps/app-id/channels", params)
    result = auth.authenticate_request(APP, "GET", "/apps/app-id/channels", query, b"", now=T)
    assert result["filter_by_prefix"] == "a+b"


def test_plus_retry_failure_reports_the_literal_reading() -> None:
    params = default_params(filter_by_prefix="a+b")
    query = "&".join(f"{k}={v}" for k, v in params.items()) + "&auth_signature=" + "0" * 64
    with pytest.raises(RestError) as excinfo:
        auth.authenticate_request(APP, "GET", "/apps/app-id/channels", query, b"", now=T)
    assert "filter_by_prefix=a+b" in excinfo.value.message


@pytest.mark.parametrize("prefix", ["/ws", "/ws/", "ws", "/relay/v1"])
def test_path_prefix_sdk_signs_without_it(prefix: str) -> None:
    query = signed_query(APP, "GET", "/apps/app-id/channels", default_params())
    full = "/" + prefix.strip("/") + "/apps/app-id/channels"
    auth.authenticate_request(APP, "GET", full, query, b"", now=T, path_prefix=prefix)
    with pytest.raises(RestError):
        auth.authenticate_request(APP, "GET", full, query, b"", now=T)


def test_path_prefix_soketi_signs_the_full_path() -> None:
    query = signed_query(APP, "GET", "/ws/apps/app-id/channels", default_params())
    auth.authenticate_request(
        APP, "GET", "/ws/apps/app-id/channels", query, b"", now=T, path_prefix="/ws"
    )


def test_path_prefix_failure_names_the_path_without_prefix() -> None:
    query = signed_query(APP, "GET", "/elsewhere", default_params())
    with pytest.raises(RestError) as excinfo:
        auth.authenticate_request(
            APP, "GET", "/ws/apps/app-id/channels", query, b"", now=T, path_prefix="/ws"
        )
    assert 'HmacSHA256Hex("GET\\n/apps/app-id/channels\\n' in excinfo.value.message


def test_path_prefix_matches_whole_segments_only() -> None:
    query = signed_query(APP, "GET", "x/apps/app-id/channels", default_params())
    with pytest.raises(RestError):
        auth.authenticate_request(
            APP, "GET", "/wsx/apps/app-id/channels", query, b"", now=T, path_prefix="/ws"
        )
    query = signed_query(APP, "GET", "/wsx/apps/app-id/channels", default_params())
    auth.authenticate_request(
        APP, "GET", "/wsx/apps/app-id/channels", query, b"", now=T, path_prefix="/ws"
    )


def test_repeated_parameter_last_value_wins() -> None:
    params = default_params(info="user_count")
    query = "info=subscription_count&auth_timestamp=1&" + signed_query(
        APP, "GET", "/apps/app-id/channels", params
    )
    result = auth.authenticate_request(APP, "GET", "/apps/app-id/channels", query, b"", now=T)
    assert result["info"] == "user_count"
    assert result["auth_timestamp"] == str(T)
    # and the signature covers the last value only
    query = signed_query(APP, "GET", "/apps/app-id/channels", params) + "&info=subscription_count"
    with pytest.raises(RestError, match="Invalid signature"):
        auth.authenticate_request(APP, "GET", "/apps/app-id/channels", query, b"", now=T)


def test_uppercase_parameter_names_are_lowercased() -> None:
    params = default_params(info="user_count")
    query = signed_query(APP, "GET", "/apps/app-id/channels", params).replace("info=", "INFO=")
    result = auth.authenticate_request(APP, "GET", "/apps/app-id/channels", query, b"", now=T)
    assert result["info"] == "user_count"


def test_method_is_signed() -> None:
    query = signed_query(APP, "GET", "/apps/app-id/channels", default_params())
    with pytest.raises(RestError, match="Invalid signature"):
        auth.authenticate_request(APP, "POST", "/apps/app-id/channels", query, b"", now=T)


# -- channel and sign-in tokens (PROTOCOL.md §7) --------------------------------------------------


def app_of(key: str, secret: str) -> App:
    return App(id="1", key=key, secret=secret)


F2_DATA = '{"user_id":"user-1","user_info":{"name":"Alice"}}'
F3_DATA = '{"user_id": "user-1", "user_info": {"name": "Alice"}}'

CHANNEL_TOKENS = [
    (
        "A1",
        app_of("278d425bdf160c739803", "7ad3773142a6692b25b8"),
        "1234.1234",
        "private-foobar",
        None,
        "278d425bdf160c739803:58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4",
    ),
    (
        "A2",
        app_of("foo", "bar"),
        "345.23",
        "private-channel",
        None,
        "foo:89955e77e1b40e33df6d515a5ecbba86a01dc816a5b720da18a06fd26f7d92ff",
    ),
    (
        "A3",
        app_of("foo", "bar"),
        "345.43245",
        "presence-channel",
        '{"user_id":"fred","user_info":{"key":"value"}}',
        "foo:e80ba6439492c2113022c39297a87a948de14061cc67b5788e045645a68b8ccd",
    ),
    (
        "A4",
        app_of("foo", "bar"),
        "345.23",
        "private-encrypted-channel",
        None,
        "foo:fff0503dfe4929f5162efe4d1dacbce524b0d8e7e1331117a8651c0e74d369e3",
    ),
    (
        "A7",
        app_of("thisisaauthkey", "thisisasecret"),
        "45055.28877557",
        "-azAZ9_=@,.;",
        '{"user_id": "123"}',
        "thisisaauthkey:3b3f1dcc4d7d2f95dd10ed05562397b3287b102d4cccfacbf30eed2f1ffa3d69",
    ),
    (
        "F1",
        APP,
        "123.456",
        "private-my-channel",
        None,
        "app-key:90b36578c812ffffc249bb7d38b64d493edd75810fa1a907b632009586ad617e",
    ),
    (
        "F2",
        APP,
        "123.456",
        "presence-room",
        F2_DATA,
        "app-key:c875d068bfba6a4fb9a8346cc4977bb30fc748e788fc766567cfd5775b1d3fe4",
    ),
    (
        "F3",
        APP,
        "123.456",
        "presence-room",
        F3_DATA,
        "app-key:830dd11e161ea96302896dbde0071906f692169be43356d3a545e659b1118ccb",
    ),
    (
        "F5",
        APP,
        "123.456",
        "private-encrypted-room",
        None,
        "app-key:25f93c7ef55bbb8f8f2d33f7f1848f0f3b31d99d77f4363acf12914e5451f553",
    ),
]


@pytest.mark.parametrize(
    ("app", "socket_id", "channel", "channel_data", "token"),
    [row[1:] for row in CHANNEL_TOKENS],
    ids=[row[0] for row in CHANNEL_TOKENS],
)
def test_channel_token_vector(
    app: App, socket_id: str, channel: str, channel_data: str | None, token: str
) -> None:
    assert auth.channel_token(app, socket_id, channel, channel_data) == token
    presence = channel.startswith("presence-")
    assert auth.verify_channel_auth(app, socket_id, channel, token, channel_data, presence=presence)


def test_channel_auth_messages() -> None:
    assert auth.channel_auth_message("1234.1234", "private-foobar") == "1234.1234:private-foobar"
    assert (
        auth.channel_auth_message("123.456", "presence-room", F2_DATA)
        == '123.456:presence-room:{"user_id":"user-1","user_info":{"name":"Alice"}}'
    )
    assert (
        auth.user_auth_message("123.456", '{"id":"user-1","name":"Alice"}')
        == '123.456::user::{"id":"user-1","name":"Alice"}'
    )
    assert auth.channel_auth_message("1.2", "private-x", "") == "1.2:private-x:"


def test_presence_accepts_only_the_form_with_channel_data() -> None:
    with_data = auth.channel_token(APP, "123.456", "presence-room", F2_DATA)
    without = auth.channel_token(APP, "123.456", "presence-room")
    check = auth.verify_channel_auth
    assert check(APP, "123.456", "presence-room", with_data, F2_DATA, presence=True)
    assert not check(APP, "123.456", "presence-room", without, F2_DATA, presence=True)
    assert not check(APP, "123.456", "presence-room", without, None, presence=True)
    assert not check(APP, "123.456", "presence-room", with_data, F3_DATA, presence=True)


def test_private_with_channel_data_accepts_either_form() -> None:
    data = '{"user_id":"1"}'
    short = auth.channel_token(APP, "123.456", "private-x")
    long = auth.channel_token(APP, "123.456", "private-x", data)
    check = auth.verify_channel_auth
    assert check(APP, "123.456", "private-x", short, data, presence=False)
    assert check(APP, "123.456", "private-x", long, data, presence=False)
    assert check(APP, "123.456", "private-x", short, None, presence=False)
    assert not check(APP, "123.456", "private-x", long, None, presence=False)
    assert not check(APP, "123.456", "private-x", long, '{"user_id":"2"}', presence=False)
    assert not check(APP, "123.457", "private-x", short, data, presence=False)


@pytest.mark.parametrize(
    "token",
    [
        "other-key:90b36578c812ffffc249bb7d38b64d493edd75810fa1a907b632009586ad617e",
        "app-key:90b36578c812ffffc249bb7d38b64d493edd75810fa1a907b632009586ad617",
        "app-key:90B36578C812FFFFC249BB7D38B64D493EDD75810FA1A907B632009586AD617F",
        "90b36578c812ffffc249bb7d38b64d493edd75810fa1a907b632009586ad617e",
        "",
    ],
)
def test_channel_token_rejected(token: str) -> None:
    assert not auth.verify_channel_auth(
        APP, "123.456", "private-my-channel", token, None, presence=False
    )


def test_channel_token_uppercase_hex_accepted() -> None:
    token = "app-key:90B36578C812FFFFC249BB7D38B64D493EDD75810FA1A907B632009586AD617E"
    assert auth.verify_channel_auth(
        APP, "123.456", "private-my-channel", token, None, presence=False
    )


@pytest.mark.parametrize(
    ("app", "socket_id", "user_data", "token"),
    [
        (
            app_of("thisisaauthkey", "thisisasecret"),
            "12345.6789",
            '{"id":"123","name":"John Smith"}',
            "thisisaauthkey:0dddb208b53c7649f3fbbb86254a6e1986bc6f8b566423ea690c9ca773497373",
        ),
        (
            app_of("aaaa", "tofu"),
            "123.456",
            '{"id":"45678"}',
            "aaaa:f4b1fdeea7c93e32648c7230e32b172057c5623cace6cfce791c6e7035e0babd",
        ),
        (
            APP,
            "123.456",
            '{"id":"user-1","name":"Alice"}',
            "app-key:0866df7f6aa363476888d18cde80782982d8a208e54f0f9bf8ac7d86f2c50f3c",
        ),
    ],
    ids=["A5", "A6", "F4"],
)
def test_signin_vector(app: App, socket_id: str, user_data: str, token: str) -> None:
    assert auth.verify_signin(app, socket_id, token, user_data)
    assert not auth.verify_signin(app, socket_id, token, user_data + " ")
    assert not auth.verify_signin(app, socket_id + "1", token, user_data)


@pytest.mark.parametrize(
    ("channel", "master_key_b64", "expected"),
    [
        (
            "private-encrypted-channel",
            "OHRXNUZRTG5pUTFzQlFGd3J3N3Q2VFZFc0paZDEweVk=",
            "VmIsNZtCSteh8kazd2toc+ofhohBtUouQRSDtRvuyVI=",
        ),
        (
            "private-encrypted-room",
            "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
            "jLl7T7Vic8zzeBQOhI8a5zJ4iMwqc2omg0xT37NC5hs=",
        ),
    ],
    ids=["A4", "F5"],
)
def test_shared_secret_vector(channel: str, master_key_b64: str, expected: str) -> None:
    assert auth.shared_secret(channel, base64.b64decode(master_key_b64)) == expected


@pytest.mark.parametrize(
    ("secret", "body", "signature"),
    [
        (
            "thisisasecret",
            b'{"hello":"world"}',
            "40e0ad3b9aa49529322879e84de1aaaf18bde1efe839ca263d540cc865510d25",
        ),
        (
            "thisisasecret",
            b'{"time_ms":1530710011901,"events":[{"name":"client_event",'
            b'"channel":"private-my-channel","event":"client-event","data":"Unencrypted",'
            b'"socket_id":"240621.35780774"}]}',
            "a19cab2af3ca1029257570395e78d5d675e9e700ca676d18a375a7083178df1c",
        ),
        (
            "app-secret",
            b'{"time_ms":1700000000000,"events":[{"name":"channel_occupied","channel":"my-channel"}]}',
            "fec9fff324b82111ea03affc886e951bec5ee7a9e365bfd05cf254414c990a1a",
        ),
    ],
)
def test_webhook_signature_vector(secret: str, body: bytes, signature: str) -> None:
    assert auth.webhook_signature(app_of("k", secret), body) == signature


# -- authorize: POST /apps/{id}/auth (RELAY_EXTRAS.md §3) -----------------------------------------

R1_RESPONSE = {"auth": "app-key:90b36578c812ffffc249bb7d38b64d493edd75810fa1a907b632009586ad617e"}


@pytest.mark.parametrize(
    ("body", "content_type", "master_key", "response"),
    [
        pytest.param(R1_BODY, "application/json", None, R1_RESPONSE, id="R1"),
        pytest.param(
            R2_BODY,
            "application/json",
            None,
            {
                "auth": "app-key:c875d068bfba6a4fb9a8346cc4977bb30fc748e788fc766567cfd5775b1d3fe4",
                "channel_data": '{"user_id":"user-1","user_info":{"name":"Alice"}}',
            },
            id="R2",
        ),
        pytest.param(R3_BODY, "application/x-www-form-urlencoded", None, R1_RESPONSE, id="R3"),
        pytest.param(
            R4_BODY,
            "application/json",
            MASTER_KEY,
            {
                "auth": "app-key:25f93c7ef55bbb8f8f2d33f7f1848f0f3b31d99d77f4363acf12914e5451f553",
                "shared_secret": "jLl7T7Vic8zzeBQOhI8a5zJ4iMwqc2omg0xT37NC5hs=",
            },
            id="R4",
        ),
    ],
)
def test_authorize_vector(
    body: bytes, content_type: str, master_key: bytes | None, response: dict[str, str]
) -> None:
    assert auth.authorize(APP, body, content_type, master_key=master_key) == response
    # the bytes a server sends back
    assert orjson.dumps(auth.authorize(APP, body, content_type, master_key=master_key)) == (
        orjson.dumps(response)
    )


def test_authorize_r_vectors_end_to_end() -> None:
    """R1-R4: the signed request verifies, then the body yields the spec's response."""
    by_id = {r.id: r for r in REQUESTS}
    expected_auth = {
        "R1": R1_RESPONSE["auth"],
        "R2": "app-key:c875d068bfba6a4fb9a8346cc4977bb30fc748e788fc766567cfd5775b1d3fe4",
        "R3": R1_RESPONSE["auth"],
        "R4": "app-key:25f93c7ef55bbb8f8f2d33f7f1848f0f3b31d99d77f4363acf12914e5451f553",
    }
    for vector_id, token in expected_auth.items():
        request = by_id[vector_id]
        auth.authenticate_request(
            APP, "POST", request.path, raw_query(request), request.body, now=T
        )
        content_type = "application/x-www-form-urlencoded" if vector_id == "R3" else None
        result = auth.authorize(APP, request.body, content_type, master_key=MASTER_KEY)
        assert result["auth"] == token


def test_authorize_signin_token() -> None:
    body = b'{"socket_id":"123.456","user_data":{"id":"user-1","name":"Alice"}}'
    assert auth.authorize(APP, body, "application/json", master_key=None) == {
        "auth": "app-key:0866df7f6aa363476888d18cde80782982d8a208e54f0f9bf8ac7d86f2c50f3c",
        "user_data": '{"id":"user-1","name":"Alice"}',
    }
    # a string is used verbatim
    body = orjson.dumps({"socket_id": "123.456", "user_data": '{"id":"user-1","name":"Alice"}'})
    assert auth.authorize(APP, body, None, master_key=None)["auth"] == (
        "app-key:0866df7f6aa363476888d18cde80782982d8a208e54f0f9bf8ac7d86f2c50f3c"
    )


def test_authorize_form_without_content_type_and_with_charset() -> None:
    assert auth.authorize(APP, R3_BODY, None, master_key=None) == R1_RESPONSE
    assert auth.authorize(APP, R3_BODY, "text/plain", master_key=None) == R1_RESPONSE
    ct = "Application/X-WWW-Form-Urlencoded; charset=UTF-8"
    assert auth.authorize(APP, R3_BODY, ct, master_key=None) == R1_RESPONSE


def test_authorize_form_presence_channel_data_is_verbatim() -> None:
    # what pusher-js posts: form-encoded, '+' for spaces
    body = (
        b"socket_id=123.456&channel_name=presence-room&channel_data="
        b"%7B%22user_id%22%3A+%22user-1%22%2C+%22user_info%22%3A+%7B%22name%22%3A+%22Alice%22%7D%7D"
    )
    assert auth.authorize(APP, body, "application/x-www-form-urlencoded", master_key=None) == {
        "auth": "app-key:830dd11e161ea96302896dbde0071906f692169be43356d3a545e659b1118ccb",
        "channel_data": F3_DATA,
    }


def test_authorize_channel_data_string_is_verbatim_and_object_keeps_key_order() -> None:
    body = orjson.dumps(
        {"socket_id": "123.456", "channel_name": "presence-room", "channel_data": F3_DATA}
    )
    result = auth.authorize(APP, body, "application/json", master_key=None)
    assert result["channel_data"] == F3_DATA
    assert result["auth"].endswith(
        "830dd11e161ea96302896dbde0071906f692169be43356d3a545e659b1118ccb"
    )
    body = (
        b'{"socket_id":"1.2","channel_name":"presence-r",'
        b'"channel_data":{"user_info":{"z":1,"a":[1,2]},"user_id":7}}'
    )
    result = auth.authorize(APP, body, "application/json", master_key=None)
    assert result["channel_data"] == '{"user_info":{"z":1,"a":[1,2]},"user_id":7}'
    assert result["auth"] == auth.channel_token(APP, "1.2", "presence-r", result["channel_data"])


def test_authorize_private_ignores_channel_data() -> None:
    body = b'{"socket_id":"123.456","channel_name":"private-my-channel","channel_data":"{}"}'
    assert auth.authorize(APP, body, "application/json", master_key=None) == R1_RESPONSE
    body = b'{"socket_id":"123.456","channel_name":"private-my-channel","user_data":null}'
    assert auth.authorize(APP, body, "application/json", master_key=None) == R1_RESPONSE


def test_authorize_cache_kinds() -> None:
    body = b'{"socket_id":"1.2","channel_name":"private-cache-x"}'
    assert auth.authorize(APP, body, None, master_key=None) == {
        "auth": auth.channel_token(APP, "1.2", "private-cache-x")
    }
    body = b'{"socket_id":"1.2","channel_name":"private-encrypted-cache-x"}'
    assert set(auth.authorize(APP, body, None, master_key=MASTER_KEY)) == {"auth", "shared_secret"}
    body = b'{"socket_id":"1.2","channel_name":"presence-cache-x","channel_data":{"user_id":1}}'
    assert auth.authorize(APP, body, None, master_key=None)["channel_data"] == '{"user_id":1}'


def _user_info_of_size(size: int) -> bytes:
    # compact JSON of the user_info string is size bytes long: '"' + 'x' * (size - 2) + '"'
    info = "x" * (size - 2)
    return orjson.dumps(
        {
            "socket_id": "1.2",
            "channel_name": "presence-r",
            "channel_data": {"user_id": "u", "user_info": info},
        }
    )


def test_authorize_user_info_limit() -> None:
    limit = APP.max_presence_member_size_bytes
    assert limit == 2048
    auth.authorize(APP, _user_info_of_size(limit), None, master_key=None)
    with pytest.raises(RestError) as excinfo:
        auth.authorize(APP, _user_info_of_size(limit + 1), None, master_key=None)
    assert rest_error(excinfo) == (413, "The user_info is larger than 2048 bytes")
    small = App(id="1", key="k", secret="s", max_presence_member_size_kb=0.5)
    with pytest.raises(RestError) as excinfo:
        auth.authorize(small, _user_info_of_size(513), None, master_key=None)
    assert excinfo.value.status == 413


@pytest.mark.parametrize(
    ("body", "content_type", "master_key", "message"),
    [
        (b"{bad json", "application/json", None, "The received data is incorrect"),
        (b"[1,2]", None, None, "The received data is incorrect"),
        (b'"x"', "application/json", None, "The received data is incorrect"),
        (b"\xff\xfe", None, None, "The received data is incorrect"),
        (b"{}", None, None, "The socket_id field is required"),
        (b"", None, None, "The socket_id field is required"),
        (b'{"socket_id":123.456,"channel_name":"private-x"}', None, None, "Invalid socket_id"),
        (b'{"socket_id":"123","channel_name":"private-x"}', None, None, "Invalid socket_id"),
        (b'{"socket_id":"1.2\\n","channel_name":"private-x"}', None, None, "Invalid socket_id"),
        (b'{"socket_id":"\xd9\xa1.2","channel_name":"private-x"}', None, None, "Invalid socket_id"),
        (
            b'{"socket_id":"1.2"}',
            None,
            None,
            "The channel_name or user_data field is required",
        ),
        (
            b'{"socket_id":"1.2","channel_name":"private-x","user_data":"{\\"id\\":\\"1\\"}"}',
            None,
            None,
            "Send either channel_name or user_data, not both",
        ),
        (
            b'{"socket_id":"1.2","channel_name":5}',
            None,
            None,
            "The channel_name field must be a string",
        ),
        (
            b'{"socket_id":"1.2","channel_name":"private-a b"}',
            None,
            None,
            "Invalid channel name: private-a b",
        ),
        (b'{"socket_id":"1.2","channel_name":""}', None, None, "Invalid channel name: "),
        (
            b'{"socket_id":"1.2","channel_name":"private-' + b"x" * 200 + b'"}',
            None,
            None,
            "The channel name is longer than 200 characters",
        ),
        (
            b'{"socket_id":"1.2","channel_name":"my-channel"}',
            None,
            None,
            "Channel my-channel does not need authorization",
        ),
        (
            b'{"socket_id":"1.2","channel_name":"cache-x"}',
            None,
            None,
            "Channel cache-x does not need authorization",
        ),
        (
            b'{"socket_id":"1.2","channel_name":"#server-to-user-1"}',
            None,
            None,
            "Channel #server-to-user-1 does not need authorization",
        ),
        (
            b'{"socket_id":"1.2","channel_name":"private-encrypted-x"}',
            None,
            None,
            "Encrypted channels need an encryption master key",
        ),
        (
            b'{"socket_id":"1.2","channel_name":"presence-r"}',
            None,
            None,
            "The channel_data field is required for presence channels",
        ),
        (
            b'{"socket_id":"1.2","channel_name":"presence-r","channel_data":"not json"}',
            None,
            None,
            "The channel_data field must be a JSON object",
        ),
        (
            b'{"socket_id":"1.2","channel_name":"presence-r","channel_data":"[1]"}',
            None,
            None,
            "The channel_data field must be a JSON object",
        ),
        (
            b'{"socket_id":"1.2","channel_name":"presence-r","channel_data":[1]}',
            None,
            None,
            "The channel_data field must be a JSON object",
        ),
        (
            b'{"socket_id":"1.2","channel_name":"presence-r","channel_data":{"user_info":{}}}',
            None,
            None,
            "channel_data needs a user_id: a non-empty string or a number",
        ),
        (
            b'{"socket_id":"1.2","channel_name":"presence-r","channel_data":{"user_id":""}}',
            None,
            None,
            "channel_data needs a user_id: a non-empty string or a number",
        ),
        (
            b'{"socket_id":"1.2","channel_name":"presence-r","channel_data":{"user_id":true}}',
            None,
            None,
            "channel_data needs a user_id: a non-empty string or a number",
        ),
        (
            b'{"socket_id":"1.2","channel_name":"presence-r","channel_data":{"user_id":"'
            + b"u" * 129
            + b'"}}',
            None,
            None,
            "The user_id is longer than 128 characters",
        ),
        (
            b'{"socket_id":"1.2","user_data":"{\\"name\\":\\"x\\"}"}',
            None,
            None,
            "user_data needs an id: a non-empty string",
        ),
        (
            b'{"socket_id":"1.2","user_data":{"id":5}}',
            None,
            None,
            "user_data needs an id: a non-empty string",
        ),
        (
            b'{"socket_id":"1.2","user_data":{"id":""}}',
            None,
            None,
            "user_data needs an id: a non-empty string",
        ),
        (
            b'{"socket_id":"1.2","user_data":"nope"}',
            None,
            None,
            "The user_data field must be a JSON object",
        ),
        (
            b'{"socket_id":"1.2","user_data":7}',
            None,
            None,
            "The user_data field must be a JSON object",
        ),
    ],
)
def test_authorize_rejects(
    body: bytes, content_type: str | None, master_key: bytes | None, message: str
) -> None:
    with pytest.raises(RestError) as excinfo:
        auth.authorize(APP, body, content_type, master_key=master_key)
    assert rest_error(excinfo) == (400, message)


def test_authorize_user_id_limits() -> None:
    ok = (
        b'{"socket_id":"1.2","channel_name":"presence-r","channel_data":{"user_id":"'
        + b"u" * 128
        + b'"}}'
    )
    assert "auth" in auth.authorize(APP, ok, None, master_key=None)
    numeric = b'{"socket_id":"1.2","channel_name":"presence-r","channel_data":{"user_id":42}}'
    assert auth.authorize(APP, numeric, None, master_key=None)["channel_data"] == '{"user_id":42}'


def test_authorize_non_ascii_channel_data_signed_as_utf8() -> None:
    body = (
        '{"socket_id":"1.2","channel_name":"presence-r",'
        '"channel_data":{"user_id":"ü","user_info":{"n":"Zoë"}}}'
    )
    result = auth.authorize(APP, body.encode(), None, master_key=None)
    assert result["channel_data"] == '{"user_id":"ü","user_info":{"n":"Zoë"}}'
    assert auth.verify_channel_auth(
        APP, "1.2", "presence-r", result["auth"], result["channel_data"], presence=True
    )
