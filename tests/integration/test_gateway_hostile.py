"""The HTTP gateway attacked: headers of a megabyte, control characters and bytes that are not
UTF-8, ids of 10,000 characters, routes that do not exist, paging out of range, JSON that is
valid but hostile, bodies at the size limit and past it, another tenant's ids, Idempotency-Key
and If-Match misused.

Every answer is checked the same way: a 4xx in the vendor's error body with a clear ``type``
(500 only for a bug, never a traceback), no key in any answer or log line, and the gateway
still serving afterwards with nothing applied that was refused. The transport-level attacks
are written on a raw socket: an HTTP client library refuses to send most of them.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from multidict import CIMultiDict

from events.gateway import Gateway
from events.service.settings import Settings
from tests.helpers.gateway import KEYS, Api, api_for, create_body, create_sync, sync_path
from tests.helpers.live import Tenant, new_tenant

pytestmark = pytest.mark.stack

BUCKET = "bkt_hostile"
MB = 1_000_000
#: The guard on a raw exchange: a gateway that does not answer at all fails the test.
GUARD_SECONDS = 60


@pytest.fixture
async def api(gateway: Gateway, tenant: Tenant) -> AsyncIterator[Api]:
    async with api_for(gateway, tenant) as a:
        yield a
    for answer in a.log:  # every refusal the test made, in the vendor's body
        if answer.status >= 400:
            check_error(answer.status, answer.text)


@pytest.fixture(autouse=True)
def no_secret_in_any_log_line(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Every log line of the test, at every level, without a key or its hash."""
    caplog.set_level(logging.DEBUG)
    yield
    secrets = set(KEYS)
    secrets |= {hashlib.sha256(k.encode()).hexdigest() for k in KEYS}
    for record in caplog.records:
        line = record.getMessage() + (record.exc_text or "") + repr(record.__dict__)
        assert not any(s in line for s in secrets), f"a log line carried a secret: {line[:300]}"
        assert "lock_token" not in record.getMessage()


# --------------------------------------------------------------------------- helpers


def check_error(
    status: int, text: str, wanted: int | tuple[int, ...] | None = None
) -> dict[str, Any]:
    """``text`` is the vendor's error body for ``status`` (one of ``wanted``), typed and
    without a traceback; returns its ``error``."""
    if wanted is not None:
        allowed = wanted if isinstance(wanted, tuple) else (wanted,)
        assert status in allowed, (status, text[:500])
    assert 400 <= status < 500 or status == 504, (status, text[:500])
    assert "Traceback" not in text
    body = json.loads(text)
    assert body["success"] is False and body["status"] == status, body
    error = body["error"]
    assert set(error) == {"message", "type", "code", "details"}, error
    assert isinstance(error["type"], str) and error["type"], error
    assert isinstance(error["message"], str) and error["message"], error
    assert isinstance(error["details"], dict), error
    return dict(error)


@dataclass
class Raw:
    status: int
    headers: CIMultiDict[str]
    text: str

    def error(self, wanted: int | tuple[int, ...] | None = None) -> dict[str, Any]:
        return check_error(self.status, self.text, wanted)


def request_bytes(
    method: str,
    path: bytes | str,
    headers: list[tuple[bytes | str, bytes | str]],
    body: bytes = b"",
    content_length: int | None = None,
) -> bytes:
    def b(v: bytes | str) -> bytes:
        return v if isinstance(v, bytes) else v.encode()

    target = b(path)
    lines = [method.encode() + b" " + target + b" HTTP/1.1", b"Host: gateway"]
    lines += [b(k) + b": " + b(v) for k, v in headers]
    if body or content_length is not None:
        lines.append(
            b"Content-Length: %d" % (len(body) if content_length is None else content_length)
        )
        lines.append(b"Content-Type: application/json")
    lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


async def raw_http(gateway: Gateway, data: bytes) -> Raw:
    """``data`` sent on a socket of its own while the answer is read: the gateway may answer
    (and close) before it has read everything, as it should for a request too large."""
    got = await exchange(gateway, data)
    head, _, body = got.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1."), f"no HTTP answer: {got[:200]!r}"
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers: CIMultiDict[str] = CIMultiDict()
    for line in header_lines:
        name, _, value = line.partition(":")
        headers.add(name.strip(), value.strip())
    text = body.decode("utf-8", "replace")
    assert not any(k in text or k in head.decode("latin-1") for k in KEYS), "a key in an answer"
    return Raw(int(status_line.split()[1]), headers, text)


async def exchange(gateway: Gateway, data: bytes) -> bytes:
    """The bytes the gateway sent back for ``data``, until it closed or its answer was
    complete."""
    loop = asyncio.get_running_loop()
    sock = socket.create_connection(("127.0.0.1", gateway.port))
    sock.setblocking(False)

    async def send() -> None:
        view = memoryview(data)
        for start in range(0, len(view), 65536):
            try:
                await loop.sock_sendall(sock, view[start : start + 65536])
            except OSError:
                return  # answered and closed: the rest is not wanted

    sender = asyncio.create_task(send())
    got = bytearray()
    try:
        async with asyncio.timeout(GUARD_SECONDS):
            while not _complete(got):
                try:
                    chunk = await loop.sock_recv(sock, 65536)
                except ConnectionResetError:
                    break
                if not chunk:
                    break
                got += chunk
    finally:
        sender.cancel()
        sock.close()
    return bytes(got)


def _complete(got: bytearray) -> bool:
    head, sep, body = bytes(got).partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":")[1])
    return False


def auth(tenant: Tenant) -> list[tuple[bytes | str, bytes | str]]:
    KEYS.add(tenant.write_key)
    return [("Authorization", f"Bearer {tenant.write_key}"), ("X-Namespace", tenant.namespace)]


async def quiet(api: Api) -> dict[str, Any]:
    """A paused sync: nothing but a request changes it (the scheduler leaves it alone)."""
    sync = await create_sync(api, BUCKET)
    paused = await api.call("POST", sync_path(sync, "/pause"))
    assert paused.status == 200, paused.body
    assert isinstance(paused.body, dict)
    return paused.body


async def unchanged(api: Api, sync: dict[str, Any]) -> None:
    """The sync is as created, and the gateway still answers."""
    got = await api.call("GET", sync_path(sync))
    assert got.status == 200, got.body
    assert got.body["version"] == sync["version"], "a refused request changed the sync"


async def count(api: Api, **filters: Any) -> int:
    listed = await api.call(
        "POST", "/v1/syncs/list", filters, params={"include_total": "true", "limit": "1"}
    )
    assert listed.status == 200, listed.body
    return int(listed.body["total"])


# --------------------------------------------------------------------------- headers


@pytest.mark.parametrize(
    "name",
    ["Authorization", "X-Namespace", "Idempotency-Key", "If-Match", "Prefer", "X-Request-Id"],
)
async def test_a_header_of_a_megabyte_is_refused_in_the_error_body(
    gateway: Gateway, api: Api, tenant: Tenant, name: str
) -> None:
    sync = await quiet(api)
    prefix = f"Bearer {tenant.write_key}" if name == "Authorization" else ""
    headers = [(k, v) for k, v in auth(tenant) if k != name]
    headers.append((name, prefix + "a" * MB))
    answer = await raw_http(gateway, request_bytes("POST", sync_path(sync, "/pause"), headers))
    error = answer.error((400, 431))
    assert error["type"] == "header_too_large", error
    assert len(answer.text) < 2000
    await unchanged(api, sync)


async def test_too_many_headers_are_refused_in_the_error_body(
    gateway: Gateway, api: Api, tenant: Tenant
) -> None:
    sync = await quiet(api)
    headers = auth(tenant) + [(f"X-Junk-{i}", "1") for i in range(500)]
    answer = await raw_http(gateway, request_bytes("POST", sync_path(sync, "/pause"), headers))
    assert answer.error((400, 431))["type"] == "header_too_large"
    await unchanged(api, sync)


BAD_BYTES = [b"\x00", b"\x01", b"\x1b[31m", b"\x7f", b"\xff\xfe", b"\xc3\x28", b"\r\rX: y"]


@pytest.mark.parametrize("bad", BAD_BYTES, ids=repr)
@pytest.mark.parametrize(
    "name",
    ["Authorization", "X-Namespace", "Idempotency-Key", "If-Match", "Prefer", "X-Request-Id"],
)
async def test_control_characters_and_bytes_not_utf8_in_a_header_value(
    gateway: Gateway, api: Api, tenant: Tenant, name: str, bad: bytes
) -> None:
    sync = await quiet(api)
    given = dict(auth(tenant))
    original = given.get(name, "v")
    value = (original.encode() if isinstance(original, str) else original) + bad
    headers = [(k, v) for k, v in given.items() if k != name] + [(name, value)]
    answer = await raw_http(gateway, request_bytes("POST", sync_path(sync, "/pause"), headers))
    assert answer.status < 500, answer.text
    if name in ("Authorization", "X-Namespace", "If-Match"):  # not one the gateway knows: 4xx
        answer.error()
    elif answer.status >= 400:
        answer.error()
    assert "\x1b" not in answer.text and "\x00" not in answer.text
    assert all("\x1b" not in v and "\x00" not in v for v in answer.headers.values())
    got = await api.call("GET", sync_path(sync))
    assert got.status == 200  # still serving


# --------------------------------------------------------------------------- paths and routes

SYNC_ROUTES = [
    ("GET", ""),
    ("PATCH", ""),
    ("DELETE", ""),
    ("POST", "/pause"),
    ("POST", "/resume"),
    ("POST", "/trigger"),
    ("POST", "/unlock"),
    ("POST", "/jobs"),
    ("GET", "/jobs/job_01J0000000000000000000000"),
    ("GET", "/metrics"),
    ("GET", "/history"),
]
HOSTILE_IDS = [
    "%00",
    "a%00b",
    "%0d%0aX-Injected:%201",
    "%ff%fe",
    "%c3%28",
    "%e2%80%ae",
    "%1b%5b31m",
    "..%2f..%2fetc",
    "%25",
    "x" * 5000,
    " ",
    "%20",
]


def _body_for(method: str) -> dict[str, Any] | None:
    return {"description": "x"} if method == "PATCH" else None


@pytest.mark.parametrize("sync_id", HOSTILE_IDS, ids=lambda s: s[:20])
async def test_hostile_sync_ids_in_every_route_are_not_found(api: Api, sync_id: str) -> None:
    for method, tail in SYNC_ROUTES:
        answer = await api.call(
            method, f"/v1/buckets/{BUCKET}/syncs/{sync_id}{tail}", _body_for(method)
        )
        error = check_error(answer.status, answer.text, (400, 404))
        assert error["type"] in ("not_found", "bad_request", "validation_error"), (method, tail)
        assert len(answer.text) < 2000, (method, tail, "the answer echoed the id")
        assert "X-Injected" not in answer.headers


@pytest.mark.parametrize("bucket", HOSTILE_IDS, ids=lambda s: s[:20])
async def test_hostile_bucket_ids_on_create_and_list(api: Api, bucket: str) -> None:
    before = await count(api)
    made = await api.call("POST", f"/v1/buckets/{bucket}/syncs", create_body())
    if made.status == 200:  # a bucket id the contract takes is stored as given
        assert made.body["bucket_id"] not in ("", None)
        before += 1
    else:
        check_error(made.status, made.text, (400, 404, 422))
        assert len(made.text) < 4000
    listed = await api.call("POST", f"/v1/buckets/{bucket}/syncs/list")
    assert listed.status < 500, listed.text
    assert await count(api) == before


async def test_path_ids_of_ten_thousand_characters(gateway: Gateway, api: Api) -> None:
    sync = await quiet(api)
    long_id = "s" * 10_000
    for method, tail in SYNC_ROUTES:
        answer = await api.call(
            method, f"/v1/buckets/{BUCKET}/syncs/{long_id}{tail}", _body_for(method)
        )
        error = check_error(answer.status, answer.text, (404, 414))
        assert error["type"] in ("not_found", "uri_too_long"), error
        assert long_id not in answer.text
    made = await api.call("POST", f"/v1/buckets/{'b' * 10_000}/syncs", create_body())
    check_error(made.status, made.text, (414, 422))
    await unchanged(api, sync)


async def test_raw_control_bytes_in_the_request_line(
    gateway: Gateway, api: Api, tenant: Tenant
) -> None:
    for target in (
        b"/v1/buckets/b/syncs/a\x00b",
        b"/v1/buckets/b/syncs/a\xffb",
        b"/v1/\x01",
        b"/v1/buckets/b/syncs/a b",
        b"*",
        b"http://evil.example/v1/syncs/list",
    ):
        answer = await raw_http(gateway, request_bytes("GET", target, auth(tenant)))
        error = answer.error((400, 404, 405))
        assert "\x00" not in answer.text and "\\x00" not in answer.text, error
    answer = await raw_http(gateway, b"BREW\x01 / HTTP/1.1\r\nHost: x\r\n\r\n")
    answer.error(400)
    answer = await raw_http(gateway, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64)
    answer.error(400)  # TLS spoken to the plain port


async def test_unknown_routes_and_wrong_methods(api: Api) -> None:
    for method, route in (
        ("GET", "/v1/nothing"),
        ("POST", "/"),
        ("GET", "/v2/buckets/b/syncs/x"),
        ("GET", f"/v1/buckets/{BUCKET}/syncs/x/"),
        ("GET", "/v1/buckets//syncs/x"),
        ("POST", f"/v1/buckets/{BUCKET}/syncs/x/explode"),
    ):
        answer = await api.call(method, route)
        error = check_error(answer.status, answer.text, 404)
        assert error["type"] in ("not_found",), error
    for method, route, allowed in (
        ("GET", f"/v1/buckets/{BUCKET}/syncs", "POST"),
        ("PUT", f"/v1/buckets/{BUCKET}/syncs/x", "PATCH"),
        ("GET", f"/v1/buckets/{BUCKET}/syncs/x/pause", "POST"),
        ("DELETE", "/v1/syncs/list", "POST"),
        ("PROPFIND", f"/v1/buckets/{BUCKET}/syncs/x", "GET"),
    ):
        answer = await api.call(method, route)
        error = check_error(answer.status, answer.text, 405)
        assert error["type"] == "method_not_allowed"
        assert allowed in error["details"]["allowed"], error
        assert "Allow" in answer.headers


# --------------------------------------------------------------------------- the query


def _cursor(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


BAD_QUERIES: list[dict[str, str]] = [
    {"limit": "0"},
    {"limit": "100000"},
    {"limit": "-1"},
    {"limit": "ten"},
    {"limit": "9" * 500},
    {"limit": "1e3"},
    {"limit": "5.5"},
    {"page_size": "0"},
    {"offset": "-1"},
    {"offset": "10001"},
    {"page": "0"},
    {"page": "-5"},
    {"page": "10000", "limit": "1000"},  # an offset of 9,999,000 by the back door
    {"include_total": "maybe"},
    {"include_total": "\u0661"},
    {"cursor": "garbage"},
    {"cursor": "!!!!"},
    {"cursor": "\x00"},
    {"cursor": _cursor([1, 2])},
    {"cursor": _cursor(["2024-01-01T00:00:00", "sync_x"])},  # no time zone
    {"cursor": _cursor(["not a time", "sync_x"])},
    {"cursor": _cursor({"a": 1})},
    {"cursor": _cursor(["2024-01-01T00:00:00+00:00", "sync_x", "extra"])},
    {"next_cursor": "A" * 3000},
    {"after": base64.urlsafe_b64encode(b"\xff\xfe\x00").decode()},
]


@pytest.mark.parametrize("query", BAD_QUERIES, ids=lambda q: repr(q)[:40])
async def test_paging_out_of_range_is_a_validation_error(api: Api, query: dict[str, str]) -> None:
    for route in (f"/v1/buckets/{BUCKET}/syncs/list", "/v1/syncs/list"):
        answer = await api.call("POST", route, params=query)
        error = check_error(answer.status, answer.text, 422)
        assert error["type"] == "validation_error"
        fields = [e["field"] for e in error["details"]["errors"]]
        assert any(f.startswith("query.") and f[6:] in query for f in fields), fields
        assert len(answer.text) < 2000


#: Filter text no id can be (the rule of path ids): Postgres refuses U+0000, asyncpg cannot
#: encode an unpaired surrogate; neither may reach a statement.
HOSTILE_FILTERS = ["a\x00b", "\x00", "\ud800", "x\udfff", "\x1b[31m", "c" * 257]


@pytest.mark.parametrize("text", HOSTILE_FILTERS, ids=lambda t: repr(t)[:20])
async def test_filter_text_no_id_can_be_is_a_validation_error_naming_it(
    api: Api, text: str
) -> None:
    sync = await quiet(api)
    for route, field in (
        (f"/v1/buckets/{BUCKET}/syncs/list", "connection_id"),
        ("/v1/syncs/list", "connection_id"),
        ("/v1/syncs/list", "bucket_id"),
    ):
        answer = await api.call("POST", route, {field: text})
        error = check_error(answer.status, answer.text, 422)
        assert [e["field"] for e in error["details"]["errors"]] == [field], error
        assert "\x00" not in answer.text and "\\u0000" not in answer.text
    # A cursor of the right shape whose id no sync or job can have: not one this API gave.
    cursor = _cursor(["2024-01-01T00:00:00+00:00", text])
    for route in (f"/v1/buckets/{BUCKET}/syncs/list", "/v1/syncs/list", sync_path(sync, "/jobs")):
        answer = await api.call("POST", route, params={"cursor": cursor})
        error = check_error(answer.status, answer.text, 422)
        assert [e["field"] for e in error["details"]["errors"]] == ["query.cursor"], error
        assert "not a cursor this API gave" in answer.text
    await unchanged(api, sync)


async def test_a_cursor_of_another_tenant_or_another_filter_shows_only_the_callers_syncs(
    gateway: Gateway, api: Api, settings: Settings
) -> None:
    mine = {str((await create_sync(api, BUCKET))["sync_config_id"]) for _ in range(3)}
    other = await new_tenant(settings)
    async with api_for(gateway, other) as stranger:
        theirs = {str((await create_sync(stranger, BUCKET))["sync_config_id"]) for _ in range(3)}
        page = await stranger.call("POST", "/v1/syncs/list", params={"limit": "1"})
        cursor = page.body["pagination"]["next_cursor"]
        assert cursor
    listed = await api.call("POST", "/v1/syncs/list", params={"cursor": cursor, "limit": "1000"})
    assert listed.status == 200, listed.body
    ids = {r["sync_config_id"] for r in listed.body["results"]}
    assert not ids & theirs
    # A cursor of a filtered list used on another filter: a position, nothing more.
    first = await api.call("POST", "/v1/syncs/list", {"is_active": False}, params={"limit": "1"})
    cursor = first.body["pagination"]["next_cursor"]
    again = await api.call(
        "POST", "/v1/syncs/list", {"status": "ACTIVE"}, params={"cursor": cursor}
    )
    assert again.status == 200, again.body
    assert all(r["status"] == "ACTIVE" for r in again.body["results"])
    assert {r["sync_config_id"] for r in again.body["results"]} <= mine | set(ids)


async def test_trigger_with_full_sync_not_a_boolean_triggers_nothing(api: Api) -> None:
    sync = await quiet(api)
    answer = await api.call("POST", sync_path(sync, "/trigger"), params={"full_sync": "maybe"})
    check_error(answer.status, answer.text, 422)
    await unchanged(api, sync)


# --------------------------------------------------------------------------- bodies


def _nested(depth: int) -> bytes:
    return (
        b'{"connection_id": "c", "source_path": "p", "metadata": {"a": '
        + b"[" * depth
        + b"]" * depth
        + b"}}"
    )


NOT_AN_OBJECT = [
    b"null",
    b"[]",
    b"[1, 2]",
    b'"text"',
    b"1",
    b"true",
    b"[" * 10_000 + b"]" * 10_000,
    b'{"a": ' * 10_000 + b"1" + b"}" * 10_000,
    b"\xef\xbb\xbf{}",
    b"{\xff}",
    b'{"connection_id": "c"',
    b"connection_id=c&source_path=p",
    b"1" * 5000,
    b'{"connection_id": "c", "source_path": "p", "metadata": {"x": NaN}}',
    b'{"connection_id": "c", "source_path": "p", "metadata": {"x": Infinity}}',
    b'{"connection_id": "c", "source_path": "p", "batch_size": -Infinity}',
]


@pytest.mark.parametrize("raw", NOT_AN_OBJECT, ids=lambda r: repr(r[:30]))
async def test_a_body_that_is_not_a_json_object_is_invalid_json(api: Api, raw: bytes) -> None:
    before = await count(api)
    made = await api.call("POST", f"/v1/buckets/{BUCKET}/syncs", raw=raw)
    error = check_error(made.status, made.text, 400)
    assert error["type"] == "invalid_json", error
    assert await count(api) == before


ONE_FIELD_WRONG: list[dict[str, Any]] = [
    {"polling_interval_seconds": 901},
    {"polling_interval_seconds": 29},
    {"polling_interval_seconds": 2**70},
    {"batch_size": 1e400},  # JSON's 1e400 is infinity
    {"batch_size": 2**70},
    {"batch_size": "ten"},
    {"batch_size": [50]},
    {"max_objects_per_run": 0},
    {"description": "d" * 100_000},
    {"description": "d" * 501},
    {"description": "\u0000"},
    {"description": "\ud800"},
    {"metadata": {f"k{i}": i for i in range(51)}},
    {"metadata": []},
    {"metadata": "x"},
    {"metadata": {"\u0000": 1}},
    {"metadata": {"x": 1e400}},
    {"metadata": {"x": -1e400}},
    {"connection_id": 123},
    {"connection_id": None},
    {"connection_id": ""},
    {"connection_id": "c" * 10_000},
    {"source_path": ""},
    {"sync_mode": "sometimes"},
    {"skip_duplicates": "maybe"},
    {"file_filters": "x"},
    {"colour": "red"},
    {"bucket_id": "bkt_other"},
    {"created_by_user_id": "usr_admin"},
]


@pytest.mark.parametrize("wrong", ONE_FIELD_WRONG, ids=lambda w: repr(w)[:40])
async def test_a_create_valid_in_every_way_but_one_is_refused_naming_it(
    api: Api, wrong: dict[str, Any]
) -> None:
    before = await count(api)
    body = create_body(sync_mode="continuous", description="ok", metadata={"team": "a"}, **{})
    body.update(wrong)
    made = await api.call("POST", f"/v1/buckets/{BUCKET}/syncs", raw=json.dumps(body).encode())
    error = check_error(made.status, made.text, (400, 413, 422))
    assert error["type"] in ("validation_error", "invalid_json"), error
    if error["type"] == "validation_error" and "errors" in error["details"]:
        fields = " ".join(e["field"] for e in error["details"]["errors"])
        assert next(iter(wrong)) in fields, (wrong, fields)
    assert len(made.text) < 20_000, "the answer echoed the body"
    assert await count(api) == before


async def test_limits_are_inclusive(api: Api) -> None:
    made = await api.call(
        "POST",
        f"/v1/buckets/{BUCKET}/syncs",
        create_body(
            description="d" * 500,
            metadata={f"k{i}": i for i in range(50)},
            polling_interval_seconds=900,
            batch_size=100,
        ),
    )
    assert made.status == 200, made.body
    assert len(made.body["metadata"]) == 50 and len(made.body["description"]) == 500


async def test_json_nested_to_the_limit_is_taken_and_past_it_is_invalid(api: Api) -> None:
    """64 levels (the service's own limit on a command) are stored; 65, or 500 (which the
    parser reads but the models cannot write back), are refused before anything is sent."""
    made = await api.call("POST", f"/v1/buckets/{BUCKET}/syncs", raw=_nested(62))
    assert made.status == 200, made.text
    got = await api.call("GET", sync_path(made.body))
    assert got.status == 200 and got.body["metadata"] == made.body["metadata"]
    before = await count(api)
    for depth in (63, 500, 5000):  # 5000: past what the parser itself reads
        refused = await api.call("POST", f"/v1/buckets/{BUCKET}/syncs", raw=_nested(depth))
        error = check_error(refused.status, refused.text, 400)
        assert error["type"] == "invalid_json", error
        assert depth > 500 or "nested" in error["message"], error
    assert await count(api) == before


@pytest.mark.parametrize(
    "raw",
    [
        b"null",
        b"[]",
        b'{"status": "FAILED"}',
        b'{"is_active": "maybe"}',
        b'{"metadata": null}',
        b'{"batch_size": 1e400}',
    ],
    ids=repr,
)
async def test_a_hostile_update_changes_nothing(api: Api, raw: bytes) -> None:
    sync = await quiet(api)
    answer = await api.call("PATCH", sync_path(sync), raw=raw)
    check_error(answer.status, answer.text, (400, 422))
    await unchanged(api, sync)


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/json; charset=latin-1",
        "\u00e9/\u00e9",
    ],
)
async def test_a_body_that_is_not_json_whatever_its_content_type(
    api: Api, content_type: str
) -> None:
    before = await count(api)
    answer = await api.call(
        "POST",
        f"/v1/buckets/{BUCKET}/syncs",
        raw=b"connection_id=c&source_path=p",
        headers={"Content-Type": content_type},
    )
    check_error(answer.status, answer.text, (400, 415))
    assert await count(api) == before


async def test_a_body_at_the_limit_is_read_and_one_past_it_is_413(
    gateway: Gateway, api: Api, tenant: Tenant
) -> None:
    limit = gateway.body_limit
    base = json.dumps(create_body(description="")).encode()
    pad = limit - len(base)
    at = base.replace(b'"description": ""', b'"description": "' + b"d" * pad + b'"')
    assert len(at) == limit
    answer = await api.call("POST", f"/v1/buckets/{BUCKET}/syncs", raw=at)
    error = check_error(answer.status, answer.text, 422)  # read whole: too long a description
    assert "description" in answer.text and len(answer.text) < 20_000, error
    past = at.replace(b'"d', b'"dd', 1)
    answer = await api.call("POST", f"/v1/buckets/{BUCKET}/syncs", raw=past)
    assert check_error(answer.status, answer.text, 413)["type"] == "too_large"
    # A length of 10 GB announced and a little more than the limit sent: answered at once.
    head = request_bytes("POST", f"/v1/buckets/{BUCKET}/syncs", auth(tenant), b"", 10_000_000_000)
    raw = await raw_http(gateway, head + b"{" + b" " * (limit + 65536))
    assert raw.error(413)["type"] == "too_large"
    # A chunked body past the limit.
    chunk = b" " * 65536
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(limit // 65536 + 2))
    head = request_bytes(
        "POST", f"/v1/buckets/{BUCKET}/syncs", [*auth(tenant), ("Transfer-Encoding", "chunked")]
    )
    raw = await raw_http(gateway, head + chunks + b"0\r\n\r\n")
    assert raw.error(413)["type"] == "too_large"
    # Chunks that do not parse: a client error, not the gateway's.
    head = request_bytes(
        "POST", f"/v1/buckets/{BUCKET}/syncs", [*auth(tenant), ("Transfer-Encoding", "chunked")]
    )
    raw = await raw_http(gateway, head + b"zz\r\n{}\r\n0\r\n\r\n")
    raw.error(400)
    assert (await api.call("POST", "/v1/syncs/list")).status == 200


# --------------------------------------------------------------------------- other tenants


async def test_another_tenants_sync_is_a_missing_sync_in_every_route(
    gateway: Gateway, api: Api, settings: Settings
) -> None:
    sync = await create_sync(api, BUCKET, sync_mode="continuous")
    triggered = await api.call("POST", sync_path(sync, "/trigger"))
    assert triggered.status == 200, triggered.body
    job = triggered.body["sync_job_id"]
    assert (await api.call("POST", sync_path(sync, "/pause"))).status == 200  # stays as it is now
    sync = (await api.call("GET", sync_path(sync))).body
    missing = {**sync, "sync_config_id": "sync_" + "0" * 26}
    other = await new_tenant(settings)
    async with api_for(gateway, other) as stranger:
        own = await create_sync(stranger, BUCKET)
        for method, tail in [*SYNC_ROUTES, ("GET", f"/jobs/{job}")]:
            body = _body_for(method)
            theirs = await stranger.call(method, sync_path(sync, tail), body)
            absent = await stranger.call(method, sync_path(missing, tail), body)
            assert theirs.status == absent.status == 404, (method, tail, theirs.text)
            assert theirs.body == absent.body, (method, tail)
            assert str(sync["sync_config_id"]) not in theirs.text
            # The same with the caller's own bucket in the path.
            moved = await stranger.call(
                method, f"/v1/buckets/{own['bucket_id']}/syncs/{sync['sync_config_id']}{tail}", body
            )
            assert moved.status == 404 and moved.body == absent.body, (method, tail)
        # Another tenant's job under the caller's own sync.
        job_of_theirs = await stranger.call("GET", sync_path(own, f"/jobs/{job}"))
        assert job_of_theirs.status == 404 and job not in job_of_theirs.text
        # The same Idempotency-Key as the owner, on the owner's path: not the owner's answer.
        key = {"Idempotency-Key": "shared-key"}
        mine = await api.call("POST", sync_path(sync, "/unlock"), headers=key)
        assert mine.status == 200, mine.body
        copied = await stranger.call("POST", sync_path(sync, "/unlock"), headers=key)
        assert copied.status == 404, copied.text
        lists = await stranger.call("POST", f"/v1/buckets/{BUCKET}/syncs/list")
        assert all(r["sync_config_id"] != sync["sync_config_id"] for r in lists.body["results"])
    # Another bucket of the owner's own: not found either, and nothing changed.
    for method, tail in SYNC_ROUTES:
        answer = await api.call(
            method,
            f"/v1/buckets/bkt_elsewhere/syncs/{sync['sync_config_id']}{tail}",
            _body_for(method),
        )
        assert answer.status == 404, (method, tail, answer.text)
    now = await api.call("GET", sync_path(sync))
    assert now.body["version"] == sync["version"] and now.body["status"] == sync["status"]


# --------------------------------------------------------------------------- idempotency


async def test_an_idempotency_key_reused_for_another_request(api: Api) -> None:
    sync = await create_sync(api, BUCKET)
    key = {"Idempotency-Key": "k-1"}
    first = await api.call("PATCH", sync_path(sync), {"description": "one"}, headers=key)
    assert first.status == 200, first.body
    for body, more, params in (
        ({"description": "two"}, {}, None),
        ({"description": "one"}, {"If-Match": f'"{first.body["version"]}"'}, None),
        ({"description": "one"}, {}, {"x": "1"}),
    ):
        other = await api.call(
            "PATCH", sync_path(sync), body, headers={**key, **more}, params=params
        )
        assert check_error(other.status, other.text, 422)["type"] == "idempotency_key_reused"
    # On another route it is another request: the pause is applied, not the PATCH replayed.
    paused = await api.call("POST", sync_path(sync, "/pause"), headers=key)
    assert paused.status == 200 and paused.body["paused"] is True, paused.body
    assert paused.body["version"] > first.body["version"]
    for odd in ("", " ", "k" * 8000, "\u00e9t\u00e9"):
        answer = await api.call(
            "POST", sync_path(sync, "/unlock"), headers={"Idempotency-Key": odd}
        )
        assert answer.status in (200, 400), answer.text
        if answer.status == 400:
            check_error(answer.status, answer.text)


async def test_the_same_create_sent_eight_times_at_once_creates_one_sync(api: Api) -> None:
    before = await count(api, connection_id="conn_race")
    body = create_body(connection_id="conn_race")
    headers = {"Idempotency-Key": "race-1"}
    answers = await asyncio.gather(
        *(api.call("POST", f"/v1/buckets/{BUCKET}/syncs", body, headers=headers) for _ in range(8))
    )
    assert all(a.status == 200 for a in answers), [a.text for a in answers]
    assert len({a.body["sync_config_id"] for a in answers}) == 1
    assert await count(api, connection_id="conn_race") == before + 1


# --------------------------------------------------------------------------- If-Match, Prefer

MALFORMED_IF_MATCH = [
    "5",
    "abc",
    '"abc"',
    '""',
    '"1", "2"',
    '"-1"',
    '"1e3"',
    '"9' + "9" * 30 + '"',
    "W/",
    '"',
    'W/"x"',
    '"' + "9" * 5000 + '"',
    '" 1"',
    '"\u0661"',
]


async def test_if_match_malformed_stale_and_weak(api: Api) -> None:
    sync = await quiet(api)
    for value in MALFORMED_IF_MATCH:
        answer = await api.call(
            "PATCH", sync_path(sync), {"batch_size": 7}, headers={"If-Match": value}
        )
        error = check_error(answer.status, answer.text, 400)
        assert error["type"] == "invalid_if_match", (value, error)
        assert len(answer.text) < 2000
    for value in ('"0"', 'W/"0"', f'"{sync["version"] + 1}"'):
        answer = await api.call(
            "PATCH", sync_path(sync), {"batch_size": 7}, headers={"If-Match": value}
        )
        assert check_error(answer.status, answer.text, 412)["type"] == "version_conflict", value
    await unchanged(api, sync)
    # If-Match compares strongly (RFC 9110): a weak tag, even of the current version, matches
    # none, on every write and on a create; a sync that is not the caller's is still 404.
    weak = {"If-Match": f'W/"{sync["version"]}"'}
    for method, tail, body in (("PATCH", "", {"batch_size": 7}), ("POST", "/resume", None)):
        answer = await api.call(method, sync_path(sync, tail), body, headers=weak)
        assert check_error(answer.status, answer.text, 412)["type"] == "version_conflict"
    before = await count(api)
    made = await api.call("POST", f"/v1/buckets/{BUCKET}/syncs", create_body(), headers=weak)
    assert check_error(made.status, made.text, 412)["type"] == "version_conflict"
    assert await count(api) == before
    await unchanged(api, sync)
    elsewhere = await api.call(
        "PATCH", f"/v1/buckets/{BUCKET}/syncs/sync_missing", {"batch_size": 7}, headers=weak
    )
    assert elsewhere.status == 404, elsewhere.text
    strong = await api.call(
        "PATCH", sync_path(sync), {"batch_size": 7}, headers={"If-Match": f'"{sync["version"]}"'}
    )
    assert strong.status == 200, strong.text
    gone = await api.call(
        "PATCH",
        f"/v1/buckets/{BUCKET}/syncs/sync_missing",
        {"batch_size": 7},
        headers={"If-Match": "*"},
    )
    assert gone.status == 404


@pytest.mark.parametrize(
    "prefer",
    [
        "garbage",
        "respond-async, wait=abc",
        "wait=-1",
        "return=minimal",
        ";;;,,,=",
        "x" * 7000,
        "\u00e9",
    ],
)
async def test_prefer_garbage_is_ignored(api: Api, prefer: str) -> None:
    sync = await create_sync(api, BUCKET)
    answer = await api.call("POST", sync_path(sync, "/pause"), headers={"Prefer": prefer})
    assert answer.status in (200, 202), answer.text
    if answer.status == 200:
        assert answer.body["paused"] is True


async def test_the_gateway_still_serves_after_all_of_it(api: Api) -> None:
    sync = await create_sync(api, BUCKET)
    assert (await api.call("POST", sync_path(sync, "/pause"))).status == 200
    assert (await api.call("POST", sync_path(sync, "/resume"))).status == 200


async def test_numbers_at_the_extremes_that_the_contract_takes_come_back_exactly(api: Api) -> None:
    """``max_objects_per_run`` has no upper bound and metadata values are free: a number far past
    any 64-bit integer is stored and read back as it was sent, never rounded or refused late."""
    sync = await create_sync(
        api, BUCKET, max_objects_per_run=2**70, metadata={"big": 10**4000, "tiny": 1e-300}
    )
    got = await api.call("GET", sync_path(sync))
    assert got.status == 200, got.text
    assert got.body["max_objects_per_run"] == 2**70
    assert got.body["metadata"] == {"big": 10**4000, "tiny": 1e-300}
    listed = await api.call("POST", f"/v1/buckets/{BUCKET}/syncs/list", params={"limit": "1000"})
    assert listed.status == 200, listed.text
