"""The signing twins (``_signing_py``, ``_signing_c``): spec vectors and edge cases, run on both.

Vectors: PROTOCOL.md §7.4 (A1-A7, F1-F5), HTTP_API.md §2.4 (S1-S5) and §5.5 (webhooks),
RELAY_EXTRAS.md §2, §3.4, §4, §5, §7 (request signatures).
"""

from __future__ import annotations

import hashlib
import hmac
import importlib
import os
import string
from dataclasses import dataclass
from types import MappingProxyType, ModuleType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastrelay import _accel
from fastrelay.config import App
from fastrelay.errors import RestError
from fastrelay.protocol import auth, signing

EMPTY_MD5 = "d41d8cd98f00b204e9800998ecf8427e"


def _load_twin(name: str) -> ModuleType:
    if name == "c":
        try:
            return importlib.import_module("fastrelay.protocol._signing_c")
        except ImportError:
            if os.environ.get("FASTRELAY_REQUIRE_EXTENSIONS") == "1":
                raise
            pytest.skip("fastrelay.protocol._signing_c is not built")
    return importlib.import_module("fastrelay.protocol._signing_py")


@pytest.fixture(params=["py", "c"])
def twin(request: pytest.FixtureRequest) -> ModuleType:
    """Each twin in turn; the compiled one is skipped (or required) as the environment says."""
    return _load_twin(request.param)


# -- PROTOCOL.md §7.4: channel and sign-in tokens ----------------------------------------------


@dataclass(frozen=True)
class TokenVector:
    id: str
    key: str
    secret: str
    message: str  # the string signed (PROTOCOL.md §7.1)
    auth: str


TOKEN_VECTORS = [
    TokenVector(
        "A1",
        "278d425bdf160c739803",
        "7ad3773142a6692b25b8",
        "1234.1234:private-foobar",
        "278d425bdf160c739803:58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4",
    ),
    TokenVector(
        "A2",
        "foo",
        "bar",
        "345.23:private-channel",
        "foo:89955e77e1b40e33df6d515a5ecbba86a01dc816a5b720da18a06fd26f7d92ff",
    ),
    TokenVector(
        "A3",
        "foo",
        "bar",
        '345.43245:presence-channel:{"user_id":"fred","user_info":{"key":"value"}}',
        "foo:e80ba6439492c2113022c39297a87a948de14061cc67b5788e045645a68b8ccd",
    ),
    TokenVector(
        "A4",
        "foo",
        "bar",
        "345.23:private-encrypted-channel",
        "foo:fff0503dfe4929f5162efe4d1dacbce524b0d8e7e1331117a8651c0e74d369e3",
    ),
    TokenVector(
        "A5",
        "thisisaauthkey",
        "thisisasecret",
        '12345.6789::user::{"id":"123","name":"John Smith"}',
        "thisisaauthkey:0dddb208b53c7649f3fbbb86254a6e1986bc6f8b566423ea690c9ca773497373",
    ),
    TokenVector(
        "A6",
        "aaaa",
        "tofu",
        '123.456::user::{"id":"45678"}',
        "aaaa:f4b1fdeea7c93e32648c7230e32b172057c5623cace6cfce791c6e7035e0babd",
    ),
    TokenVector(
        "A7",
        "thisisaauthkey",
        "thisisasecret",
        '45055.28877557:-azAZ9_=@,.;:{"user_id": "123"}',
        "thisisaauthkey:3b3f1dcc4d7d2f95dd10ed05562397b3287b102d4cccfacbf30eed2f1ffa3d69",
    ),
    TokenVector(
        "F1",
        "app-key",
        "app-secret",
        "123.456:private-my-channel",
        "app-key:90b36578c812ffffc249bb7d38b64d493edd75810fa1a907b632009586ad617e",
    ),
    TokenVector(
        "F2",
        "app-key",
        "app-secret",
        '123.456:presence-room:{"user_id":"user-1","user_info":{"name":"Alice"}}',
        "app-key:c875d068bfba6a4fb9a8346cc4977bb30fc748e788fc766567cfd5775b1d3fe4",
    ),
    TokenVector(
        "F3",
        "app-key",
        "app-secret",
        '123.456:presence-room:{"user_id": "user-1", "user_info": {"name": "Alice"}}',
        "app-key:830dd11e161ea96302896dbde0071906f692169be43356d3a545e659b1118ccb",
    ),
    TokenVector(
        "F4",
        "app-key",
        "app-secret",
        '123.456::user::{"id":"user-1","name":"Alice"}',
        "app-key:0866df7f6aa363476888d18cde80782982d8a208e54f0f9bf8ac7d86f2c50f3c",
    ),
    TokenVector(
        "F5",
        "app-key",
        "app-secret",
        "123.456:private-encrypted-room",
        "app-key:25f93c7ef55bbb8f8f2d33f7f1848f0f3b31d99d77f4363acf12914e5451f553",
    ),
]


@pytest.mark.parametrize("vector", TOKEN_VECTORS, ids=lambda v: v.id)
def test_token_vector(twin: ModuleType, vector: TokenVector) -> None:
    secret = vector.secret.encode()
    hex_part = vector.auth.partition(":")[2]
    assert twin.sign(secret, vector.message) == hex_part
    assert twin.sign(secret, vector.message.encode()) == hex_part
    assert twin.verify_token(secret, vector.key, vector.auth, vector.message) is True
    assert twin.verify_token(secret, vector.key, vector.auth, vector.message + " ") is False


# -- HTTP_API.md §5.5: webhook signatures ---------------------------------------------------------

WEBHOOK_VECTORS = [
    (
        "thisisasecret",
        b'{"hello":"world"}',
        "40e0ad3b9aa49529322879e84de1aaaf18bde1efe839ca263d540cc865510d25",
    ),
    (
        "thisisasecret",
        b'{"time_ms":1530710011901,"events":[{"name":"client_event","channel":"private-my-channel",'
        b'"event":"client-event","data":"Unencrypted","socket_id":"240621.35780774"}]}',
        "a19cab2af3ca1029257570395e78d5d675e9e700ca676d18a375a7083178df1c",
    ),
    (
        "app-secret",
        b'{"time_ms":1700000000000,"events":[{"name":"channel_occupied","channel":"my-channel"}]}',
        "fec9fff324b82111ea03affc886e951bec5ee7a9e365bfd05cf254414c990a1a",
    ),
]


@pytest.mark.parametrize(("secret", "body", "signature"), WEBHOOK_VECTORS)
def test_webhook_vector(twin: ModuleType, secret: str, body: bytes, signature: str) -> None:
    assert twin.sign(secret.encode(), body) == signature
    assert twin.sign(secret.encode(), bytearray(body)) == signature
    assert twin.sign(secret.encode(), memoryview(body)) == signature


# -- HTTP_API.md §2.4 and RELAY_EXTRAS.md: signed requests ----------------------------------------


@dataclass(frozen=True)
class RequestVector:
    id: str
    secret: str
    method: str
    path: str
    params: dict[str, str]  # without auth_signature
    signature: str
    signed: str | None = None  # the string to sign, where the spec prints it


def _auth(key: str, timestamp: str, body_md5: str | None = None, **extra: str) -> dict[str, str]:
    params = {"auth_key": key, "auth_timestamp": timestamp, "auth_version": "1.0", **extra}
    if body_md5 is not None:
        params["body_md5"] = body_md5
    return params


_DEFAULT = ("app-key", "1700000000")

REQUEST_VECTORS = [
    RequestVector(
        "S1",
        "7ad3773142a6692b25b8",
        "POST",
        "/apps/3/events",
        _auth("278d425bdf160c739803", "1353088179", "ec365a775a4cd0599faeb73354201b6f"),
        "da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c",
        "POST\n/apps/3/events\nauth_key=278d425bdf160c739803&auth_timestamp=1353088179"
        "&auth_version=1.0&body_md5=ec365a775a4cd0599faeb73354201b6f",
    ),
    RequestVector(
        "S2-get",
        "secret",
        "GET",
        "/some/obscure/api",
        _auth("key", "1000", EMPTY_MD5, foo="bar"),
        "5c49f04a95eedc9028b1e0e8de7c2c7ad63504a0e3b5c145d2accaef6c14dbac",
        "GET\n/some/obscure/api\nauth_key=key&auth_timestamp=1000&auth_version=1.0"
        "&body_md5=d41d8cd98f00b204e9800998ecf8427e&foo=bar",
    ),
    RequestVector(
        "S2-post",
        "secret",
        "POST",
        "/some/obscure/api",
        _auth("key", "1000", "94232c5b8fc9272f6f73a1e36eb68fcf"),
        "e05fa4cafee86311746ee3981d5581a5e4e87c27bbab0aeb1059e2df5c90258b",
        "POST\n/some/obscure/api\nauth_key=key&auth_timestamp=1000&auth_version=1.0"
        "&body_md5=94232c5b8fc9272f6f73a1e36eb68fcf",
    ),
    RequestVector(
        "S3-body",
        "tofu",
        "GET",
        "/event",
        _auth("f00d", "1234567890", "165d5e6d7ca8f73b3853ce45addf42fc"),
        "a650196dc427ebe837226f8565ca9232198c6d1b9455eaa72374a9dc0b620e7b",
        "GET\n/event\nauth_key=f00d&auth_timestamp=1234567890&auth_version=1.0"
        "&body_md5=165d5e6d7ca8f73b3853ce45addf42fc",
    ),
    RequestVector(
        "S3-query",
        "tofu",
        "GET",
        "/event",
        _auth("f00d", "1234567890", foo="bar", baz="123454321"),
        "d8bdbd31911fb7400a14fbd36fd7de053494725b64400ae5856deafe304b34a9",
        "GET\n/event\nauth_key=f00d&auth_timestamp=1234567890&auth_version=1.0"
        "&baz=123454321&foo=bar",
    ),
    RequestVector(
        "S4a",
        "app-secret",
        "POST",
        "/apps/app-id/events",
        _auth(*_DEFAULT, "1615a707e7b476b09e397edb9cc05e9b"),
        "59e7ea9c566674ffb08efff7d4d2b96c4c6aae140721a67bd66d47934d78a3b0",
        "POST\n/apps/app-id/events\nauth_key=app-key&auth_timestamp=1700000000&auth_version=1.0"
        "&body_md5=1615a707e7b476b09e397edb9cc05e9b",
    ),
    RequestVector(
        "S4b",
        "app-secret",
        "GET",
        "/apps/app-id/channels",
        _auth(*_DEFAULT, filter_by_prefix="presence-", info="user_count"),
        "fd5a1b38d92aee2b7913a8cf43136cffab888ee5a097536910d6239f08eb68a2",
        "GET\n/apps/app-id/channels\nauth_key=app-key&auth_timestamp=1700000000&auth_version=1.0"
        "&filter_by_prefix=presence-&info=user_count",
    ),
    RequestVector(
        "S4c",
        "app-secret",
        "GET",
        "/apps/app-id/channels/presence-room",
        _auth(*_DEFAULT, info="user_count,subscription_count"),
        "63a12586312655a389c2cd2456ef12ce123cb22ece45add17de2273aaea20235",
        "GET\n/apps/app-id/channels/presence-room\nauth_key=app-key&auth_timestamp=1700000000"
        "&auth_version=1.0&info=user_count,subscription_count",
    ),
    RequestVector(
        "S4d",
        "app-secret",
        "POST",
        "/apps/app-id/users/user-1/terminate_connections",
        _auth(*_DEFAULT, "99914b932bd37a50b983c5e7c90ae93b"),
        "b01496ec48272aa53b79731db18e32d6cb67bbfa0bd553f1dfb1c60191939be0",
        "POST\n/apps/app-id/users/user-1/terminate_connections\nauth_key=app-key"
        "&auth_timestamp=1700000000&auth_version=1.0&body_md5=99914b932bd37a50b983c5e7c90ae93b",
    ),
    RequestVector(
        "S5a",
        "app-secret",
        "GET",
        "/apps/1/channels",
        _auth(*_DEFAULT, EMPTY_MD5),
        "014b0ccda2ea13e4e7ba1aef68970577bc73e3f22909181d87ce2fe149a65f32",
    ),
    RequestVector(
        "S5b",
        "app-secret",
        "POST",
        "/users/user-1/terminate_connections",
        _auth(*_DEFAULT, "99914b932bd37a50b983c5e7c90ae93b"),
        "15119d46af080cd4fd5c2238c33e616346bd7f060d8224ddf6769add535571ee",
    ),
    RequestVector(
        "S5c",
        "app-secret",
        "POST",
        "/apps/1/events",
        _auth(*_DEFAULT, "dd37bf9d3d72758038c67623f0dea8e0"),
        "855efc7f257cc55ce182ce881204414cb700235004ae77526d6e58a3c7855dd6",
    ),
    RequestVector(
        "S5d",
        "app-secret",
        "POST",
        "/apps/1/batch_events",
        _auth(*_DEFAULT, "854b23e179730cd905f3047ecd68bf9e"),
        "8b6684a9e728fa003ffbd136afa9e052ccc6c648b723a384367c39059edd0955",
    ),
    RequestVector(
        "extras-events-batch",
        "app-secret",
        "POST",
        "/apps/app-id/events/batch",
        _auth(*_DEFAULT, "1aa1655cf43dbf7bee388b5f7558eb12"),
        "9d46ff1e984e40f455339c8f8f9e7fed5f640220842855ddb379ad0cf35a4fc9",
        "POST\n/apps/app-id/events/batch\nauth_key=app-key&auth_timestamp=1700000000"
        "&auth_version=1.0&body_md5=1aa1655cf43dbf7bee388b5f7558eb12",
    ),
    RequestVector(
        "extras-R1",
        "app-secret",
        "POST",
        "/apps/app-id/auth",
        _auth(*_DEFAULT, "848272388f8c870abe92da4ff8c4dceb"),
        "ad83181420d14f1273c25b35dc6c13f26a7a2f7efef67906216a6caaa0d7e6c7",
        "POST\n/apps/app-id/auth\nauth_key=app-key&auth_timestamp=1700000000&auth_version=1.0"
        "&body_md5=848272388f8c870abe92da4ff8c4dceb",
    ),
    RequestVector(
        "extras-R2",
        "app-secret",
        "POST",
        "/apps/app-id/auth",
        _auth(*_DEFAULT, "bdda8499657db0c55a32679ee564417c"),
        "6173c8ee0bf8e50d1871b557b2db03b831d95924e5a82054c17aa32f1531d7a5",
    ),
    RequestVector(
        "extras-R3",
        "app-secret",
        "POST",
        "/apps/app-id/auth",
        _auth(*_DEFAULT, "2de9eb0d55c4652e3b2ec1eb4abd487a"),
        "d9542add026c703b3f9d78d1620d26f41d7793eb379fe90565d3ea4eb9a6226a",
    ),
    RequestVector(
        "extras-R4",
        "app-secret",
        "POST",
        "/apps/app-id/auth",
        _auth(*_DEFAULT, "d22a5d55ddfedc910f10cdefaa60251a"),
        "cc6c52aa1e9d5772ac1313acf1acd008fc08375c40fb633d00643b08cf9c4bc9",
    ),
    RequestVector(
        "extras-history",
        "app-secret",
        "GET",
        "/apps/app-id/channels/my-channel/events",
        _auth(*_DEFAULT, limit="10", before="42"),
        "7df645b49fd357452befb1e1bde32b7f2a0b954a90cfa5afdc8bc1ef0a65b11a",
        "GET\n/apps/app-id/channels/my-channel/events\nauth_key=app-key&auth_timestamp=1700000000"
        "&auth_version=1.0&before=42&limit=10",
    ),
    RequestVector(
        "extras-event-log",
        "app-secret",
        "GET",
        "/apps/app-id/events/log",
        _auth(*_DEFAULT, limit="100"),
        "3f3a62d60e8ec04f17e00d4d0337904574b3dcd0e8bb76749d66db75d1f5e690",
        "GET\n/apps/app-id/events/log\nauth_key=app-key&auth_timestamp=1700000000"
        "&auth_version=1.0&limit=100",
    ),
    RequestVector(
        "extras-user-events",
        "app-secret",
        "POST",
        "/apps/app-id/users/user-1/events",
        _auth(*_DEFAULT, "96189b26c5b5a3c1d726df6a9ef81d20"),
        "7373adcf1c88a0a0abc55659c3b2bfb87106c86c87b0f3862c68d71bf4357b3c",
        "POST\n/apps/app-id/users/user-1/events\nauth_key=app-key&auth_timestamp=1700000000"
        "&auth_version=1.0&body_md5=96189b26c5b5a3c1d726df6a9ef81d20",
    ),
]


@pytest.mark.parametrize("vector", REQUEST_VECTORS, ids=lambda v: v.id)
def test_request_vector(twin: ModuleType, vector: RequestVector) -> None:
    secret = vector.secret.encode()
    signed = twin.string_to_sign(vector.method, vector.path, vector.params)
    if vector.signed is not None:
        assert signed == vector.signed
    assert twin.sign(secret, signed) == vector.signature
    assert twin.verify_request(secret, vector.method, vector.path, vector.params, vector.signature)
    # auth_signature in the params is left out of the string to sign
    with_signature = {**vector.params, "auth_signature": vector.signature}
    assert twin.string_to_sign(vector.method, vector.path, with_signature) == signed
    assert twin.verify_request(secret, vector.method, vector.path, with_signature, vector.signature)
    # any other change breaks it
    assert not twin.verify_request(
        secret, vector.method, vector.path + "/", vector.params, vector.signature
    )
    assert not twin.verify_request(
        secret, vector.method, vector.path, {**vector.params, "x": ""}, vector.signature
    )


# -- verify_token: the format rules of PROTOCOL.md §7.2 --------------------------------------------

F1 = TOKEN_VECTORS[7]
F1_SECRET = F1.secret.encode()
F1_HEX = F1.auth.partition(":")[2]


def test_verify_token_accepts_uppercase_and_mixed_case_hex(twin: ModuleType) -> None:
    assert twin.verify_token(F1_SECRET, "app-key", "app-key:" + F1_HEX.upper(), F1.message)
    mixed = "".join(c.upper() if i % 3 else c for i, c in enumerate(F1_HEX))
    assert twin.verify_token(F1_SECRET, "app-key", "app-key:" + mixed, F1.message)


@pytest.mark.parametrize(
    "auth",
    [
        pytest.param("other-key:" + F1_HEX, id="wrong-key"),
        pytest.param("app-ke:" + F1_HEX, id="key-prefix"),
        pytest.param("app-keyy:" + F1_HEX, id="key-longer"),
        pytest.param("APP-KEY:" + F1_HEX, id="key-case"),
        pytest.param(":" + F1_HEX, id="empty-key"),
        pytest.param(F1_HEX, id="no-colon"),
        pytest.param("app-key" + F1_HEX, id="no-separator"),
        pytest.param("app-key:" + F1_HEX[:63], id="63-hex"),
        pytest.param("app-key:" + F1_HEX + "0", id="65-hex"),
        pytest.param("app-key:", id="empty-hex"),
        pytest.param("app-key:" + F1_HEX[:63] + "g", id="non-hex"),
        pytest.param("app-key:" + F1_HEX[:63] + "\u00e9", id="non-ascii-64-chars"),
        pytest.param("app-key:" + F1_HEX[:62] + "\u00e9", id="non-ascii-64-bytes"),
        pytest.param("app-key:" + F1_HEX[:63] + "\ud800", id="lone-surrogate"),
        pytest.param("app-key: " + F1_HEX[:63], id="space"),
        pytest.param(
            "app-key:" + F1_HEX[:-1] + ("0" if F1_HEX[-1] != "0" else "1"), id="last-digit"
        ),
        pytest.param(
            "app-key:" + ("0" if F1_HEX[0] != "0" else "1") + F1_HEX[1:], id="first-digit"
        ),
        pytest.param("app-key:app-key:" + F1_HEX, id="key-twice"),
        pytest.param("", id="empty"),
    ],
)
def test_verify_token_rejects(twin: ModuleType, auth: str) -> None:
    assert twin.verify_token(F1_SECRET, "app-key", auth, F1.message) is False


@pytest.mark.parametrize("auth", [None, 123, b"app-key:" + F1_HEX.encode(), ["app-key", F1_HEX]])
def test_verify_token_non_string_auth_is_false(twin: ModuleType, auth: object) -> None:
    assert twin.verify_token(F1_SECRET, "app-key", auth, F1.message) is False


def test_verify_token_wrong_secret_or_message(twin: ModuleType) -> None:
    assert not twin.verify_token(b"app-secreT", "app-key", F1.auth, F1.message)
    assert not twin.verify_token(F1_SECRET, "app-key", F1.auth, "123.456:private-my-channeL")


def test_verify_token_key_with_colon_never_matches(twin: ModuleType) -> None:
    # split at the first ':' (§7.2): a key containing ':' cannot be the left part
    message = "1.2:private-x"
    auth = "a:b:" + twin.sign(b"s", message)
    assert twin.verify_token(b"s", "a:b", auth, message) is False
    assert twin.verify_token(b"s", "a", "a:" + twin.sign(b"s", message), message) is True


def test_verify_token_unicode(twin: ModuleType) -> None:
    message = '1.2:presence-r:{"user_id":"ü","user_info":{"name":"Zoë 🐍"}}'
    auth = "kéy:" + hmac.digest(b"s\xc3\xa9", message.encode(), "sha256").hex()
    assert twin.verify_token(b"s\xc3\xa9", "kéy", auth, message) is True
    assert twin.verify_token(b"s\xc3\xa9", "key", auth, message) is False


def test_verify_token_unencodable_message_is_false(twin: ModuleType) -> None:
    assert twin.verify_token(F1_SECRET, "app-key", F1.auth, "1.2:private-\ud800") is False


# -- sign -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 32, 63, 64, 65, 100, 1000])
def test_sign_any_key_length(twin: ModuleType, size: int) -> None:
    key = bytes(i % 251 for i in range(size))
    for message in (b"", b"m", b"x" * 1000, b"y" * 100_000):
        assert twin.sign(key, message) == hmac.digest(key, message, "sha256").hex()


def test_sign_bytes_like_secret(twin: ModuleType) -> None:
    expected = hmac.digest(b"secret", b"msg", "sha256").hex()
    assert twin.sign(bytearray(b"secret"), "msg") == expected
    assert twin.sign(memoryview(b"secret"), "msg") == expected


@pytest.mark.parametrize("secret", ["secret", 5, None])
def test_sign_rejects_non_bytes_secret(twin: ModuleType, secret: object) -> None:
    with pytest.raises(TypeError):
        twin.sign(secret, "msg")


def test_sign_unencodable_text_raises(twin: ModuleType) -> None:
    with pytest.raises(UnicodeEncodeError):
        twin.sign(b"s", "\udcff")


def test_sign_is_lowercase_hex(twin: ModuleType) -> None:
    result = twin.sign(b"s", "m")
    assert len(result) == 64
    assert set(result) <= set(string.hexdigits.lower())


# -- string_to_sign / verify_request ---------------------------------------------------------------


def test_string_to_sign_without_params(twin: ModuleType) -> None:
    assert twin.string_to_sign("GET", "/x", {}) == "GET\n/x\n"
    assert twin.string_to_sign("GET", "/x", {"auth_signature": "z"}) == "GET\n/x\n"


def test_string_to_sign_sorts_by_byte_order_and_keeps_values_raw(twin: ModuleType) -> None:
    params = {"b": "2", "a_b": "x y", "ab": "a+b&c=d", "a": "%20", "é": "ü", "z": ""}
    assert (
        twin.string_to_sign("POST", "/p", params) == "POST\n/p\na=%20&a_b=x y&ab=a+b&c=d&b=2&z=&é=ü"
    )


def test_verify_request_many_params(twin: ModuleType) -> None:
    # more parameters than the compiled twin sorts on the stack
    params = {f"p{i:02d}": str(i) for i in range(40, 0, -1)}
    signed = twin.string_to_sign("GET", "/m", params)
    assert signed == "GET\n/m\n" + "&".join(f"p{i:02d}={i}" for i in range(1, 41))
    signature = hmac.digest(b"s", signed.encode(), "sha256").hex()
    assert twin.verify_request(b"s", "GET", "/m", params, signature)
    assert twin.verify_request(b"s", "GET", "/m", params, signature.upper())
    assert not twin.verify_request(b"s", "GET", "/m", {**params, "p01": "2"}, signature)


def test_verify_request_other_mappings_and_values(twin: ModuleType) -> None:
    params = {"auth_key": "k", "n": "1"}
    signature = hmac.digest(b"s", b"GET\n/m\nauth_key=k&n=1", "sha256").hex()
    assert twin.verify_request(b"s", "GET", "/m", MappingProxyType(params), signature)
    # a non-str value is formatted, as string_to_sign does, in both twins
    assert twin.string_to_sign("GET", "/m", {"auth_key": "k", "n": 1}) == "GET\n/m\nauth_key=k&n=1"
    assert twin.verify_request(b"s", "GET", "/m", {"auth_key": "k", "n": 1}, signature)


@pytest.mark.parametrize(
    "signature",
    [None, 1, "", "0" * 63, "0" * 65, "g" * 64, "\u00e9" * 64, "\ud800" * 64],
)
def test_verify_request_rejects_malformed_signature(twin: ModuleType, signature: object) -> None:
    assert twin.verify_request(b"s", "GET", "/m", {"a": "b"}, signature) is False


def test_verify_request_unencodable_params_are_false(twin: ModuleType) -> None:
    assert twin.verify_request(b"s", "GET", "/m", {"a": "\ud800"}, "0" * 64) is False
    assert twin.verify_request(b"s", "GET", "/\ud800", {"a": "b"}, "0" * 64) is False


# -- the twins agree ----------------------------------------------------------------------------

_names = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="&="), max_size=12)
_values = st.text(alphabet=st.characters(codec="utf-8"), max_size=40)


@settings(max_examples=300, deadline=None)
@given(
    secret=st.binary(max_size=130),
    method=st.sampled_from(["GET", "POST"]),
    path=st.text(alphabet=st.characters(codec="utf-8"), max_size=40),
    params=st.dictionaries(_names, _values, max_size=20),
)
def test_twins_agree_on_requests(
    secret: bytes, method: str, path: str, params: dict[str, str]
) -> None:
    py = _load_twin("py")
    c = _load_twin("c")
    signed = py.string_to_sign(method, path, params)
    assert c.string_to_sign(method, path, params) == signed
    expected = hmac.digest(secret, signed.encode(), "sha256").hex()
    assert py.sign(secret, signed) == c.sign(secret, signed) == expected
    for twin in (py, c):
        assert twin.verify_request(secret, method, path, params, expected)
        assert twin.verify_request(secret, method, path, params, expected.upper())
        assert not twin.verify_request(secret, method, path + "x", params, expected)


@settings(max_examples=300, deadline=None)
@given(
    secret=st.binary(max_size=130),
    message=st.text(max_size=200),
    auth=st.text(alphabet="0123456789abcdefABCDEF:gk-", max_size=80),
)
def test_twins_agree_on_tokens(secret: bytes, message: str, auth: str) -> None:
    py = _load_twin("py")
    c = _load_twin("c")
    assert py.verify_token(secret, "k", auth, message) == c.verify_token(secret, "k", auth, message)
    try:
        good = "k:" + py.sign(secret, message)
    except UnicodeEncodeError:
        assert not c.verify_token(secret, "k", "k:" + "0" * 64, message)
        return
    assert py.verify_token(secret, "k", good, message)
    assert c.verify_token(secret, "k", good, message)


# -- the selector -------------------------------------------------------------------------------


def test_selector_records_its_choice() -> None:
    chosen = _accel.implementations()["signing"]
    origin = signing.verify_token.__module__
    assert chosen == ("c" if origin.endswith("_c") else "py")
    if _accel.NO_EXTENSIONS:
        assert origin == "fastrelay.protocol._signing_py"
    if os.environ.get("FASTRELAY_REQUIRE_EXTENSIONS") == "1":
        assert chosen == "c"
    for name in ("check_request", "sign", "string_to_sign", "verify_request", "verify_token"):
        assert getattr(signing, name).__module__ == origin


# -- check_request: the fast path of a signed request --------------------------------------------

_APP_KEY = "app-key"
_SECRET = b"app-secret"
_NOW = 1_700_000_000.5


def _signed_query(
    path: str = "/apps/1/events",
    body: bytes = b'{"name":"e"}',
    *,
    extra: dict[str, str] | None = None,
    method: str = "POST",
) -> str:
    """A query as the SDKs send it: parameters, then the signature over them."""
    py = _load_twin("py")
    params = {"auth_key": _APP_KEY, "auth_timestamp": "1700000000", "auth_version": "1.0"}
    if body:
        params["body_md5"] = hashlib.md5(body).hexdigest()
    params.update(extra or {})
    signature = py.sign(_SECRET, py.string_to_sign(method, path, params))
    return "&".join(f"{k}={v}" for k, v in params.items()) + f"&auth_signature={signature}"


def _tampered(query: str) -> str:
    """``query`` with the last hex digit of its signature changed."""
    return query[:-1] + ("1" if query.endswith("0") else "0")


def test_check_request_accepts_a_signed_publish(twin: ModuleType) -> None:
    query = _signed_query()
    params = twin.check_request(
        _SECRET, _APP_KEY, "POST", "/apps/1/events", query, b'{"name":"e"}', _NOW, 600
    )
    assert params == auth.parse_query(query)
    assert set(params) == {
        "auth_key",
        "auth_timestamp",
        "auth_version",
        "body_md5",
        "auth_signature",
    }


def test_check_request_without_a_body(twin: ModuleType) -> None:
    query = _signed_query("/apps/1/channels", b"", method="GET")
    assert twin.check_request(_SECRET, _APP_KEY, "GET", "/apps/1/channels", query, b"", _NOW, 600)
    with_md5 = _signed_query("/apps/1/channels", b"", extra={"body_md5": EMPTY_MD5}, method="GET")
    assert twin.check_request(
        _SECRET, _APP_KEY, "GET", "/apps/1/channels", with_md5, b"", _NOW, 600
    )


@pytest.mark.parametrize(
    ("case", "query", "body", "now", "tolerance"),
    [
        ("wrong body", _signed_query(), b'{"name":"x"}', _NOW, 600),
        ("no body_md5", _signed_query(body=b""), b"{}", _NOW, 600),
        ("expired", _signed_query(), b'{"name":"e"}', _NOW + 601, 600),
        (
            "wrong key",
            _signed_query().replace("auth_key=app-key", "auth_key=other"),
            b'{"name":"e"}',
            _NOW,
            600,
        ),
        ("percent", _signed_query(extra={"info": "a%2Cb"}), b'{"name":"e"}', _NOW, 600),
        ("non-ascii", _signed_query(extra={"x": "é"}), b'{"name":"e"}', _NOW, 600),
        ("bad signature", _tampered(_signed_query()), b'{"name":"e"}', _NOW, 600),
        (
            "no version",
            _signed_query().replace("auth_version=1.0&", ""),
            b'{"name":"e"}',
            _NOW,
            600,
        ),
        ("timestamp", _signed_query().replace("1700000000", "17e8"), b'{"name":"e"}', _NOW, 0),
    ],
)
def test_check_request_leaves_the_rest_to_the_full_checks(
    twin: ModuleType, case: str, query: str, body: bytes, now: float, tolerance: int
) -> None:
    assert (
        twin.check_request(_SECRET, _APP_KEY, "POST", "/apps/1/events", query, body, now, tolerance)
        is None
    )


_query_text = st.text(alphabet="aAbB_=&%+-.0123456789é", max_size=40)


@settings(max_examples=300, deadline=None)
@given(
    extra=st.dictionaries(
        st.text(alphabet="abcXYZ_", min_size=1, max_size=6), _query_text, max_size=4
    ),
    timestamp=st.sampled_from(["1700000000", "-5", "", "-", "1699999000", "0" * 31, "１"]),
    tolerance=st.sampled_from([0, 600, -1]),
    body=st.sampled_from([b"", b"{}", b'{"name":"e"}']),
    tamper=st.booleans(),
)
def test_twins_agree_on_check_request(
    extra: dict[str, str], timestamp: str, tolerance: int, body: bytes, tamper: bool
) -> None:
    """Both twins give the same answer, and a dict only when the full checks pass with the same
    parameters."""
    py = _load_twin("py")
    c = _load_twin("c")
    params = {"auth_key": _APP_KEY, "auth_timestamp": timestamp, "auth_version": "1.0", **extra}
    if body:
        params["body_md5"] = hashlib.md5(body).hexdigest()
    signature = py.sign(_SECRET, py.string_to_sign("POST", "/p", params))
    query = "&".join(f"{k}={v}" for k, v in params.items()) + f"&auth_signature={signature}"
    if tamper:
        query += "&x=1"
    args = (_SECRET, _APP_KEY, "POST", "/p", query, body, _NOW, tolerance)
    fast = py.check_request(*args)
    assert c.check_request(*args) == fast
    app = App(id="1", key=_APP_KEY, secret=_SECRET.decode())
    try:
        full = auth.authenticate_request(
            app, "POST", "/p", query, body, now=_NOW, tolerance=tolerance
        )
    except RestError:
        full = None
    if fast is not None:
        assert fast == full
