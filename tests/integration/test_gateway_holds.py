"""Pause and resume bodies over the HTTP gateway (CONTRACT.md v1.1: ``hold``, ``until``,
``reason``, ``force``, ``mode``, ``run``), on the real stack; without a body, the seed's."""

from __future__ import annotations

import pytest

from events.service.settings import Settings
from tests.helpers.gateway import Api, create_body, key_with
from tests.helpers.live import Tenant

pytestmark = pytest.mark.stack

BUCKET = "bkt_marketing_assets"


async def new_sync(api: Api) -> str:
    answer = await api.call("POST", f"/v1/buckets/{BUCKET}/syncs", create_body())
    assert answer.status == 200, answer.body
    return f"/v1/buckets/{BUCKET}/syncs/{answer.body['sync_config_id']}"


def holds(body: dict[str, object]) -> list[object]:
    listed = body["pause_holds"]
    assert isinstance(listed, list)
    return [h["hold"] for h in listed]


async def test_pause_and_resume_bodies_place_and_release_holds(api: Api) -> None:
    one = await new_sync(api)
    named = await api.call(
        "POST", one + "/pause", {"hold": "maint:INC-9", "until": "PT2H", "reason": "db upgrade"}
    )
    assert named.status == 200, named.body
    assert named.body["status"] == "SUSPENDED" and holds(named.body) == ["maint:INC-9"]
    assert named.body["pause_reason"] == "db upgrade"
    assert named.body["pause_holds"][0]["until"] is not None
    plain = await api.call("POST", one + "/pause")  # the seed's: the caller's plain hold
    assert plain.status == 200 and len(holds(plain.body)) == 2
    # The seed's resume releases the plain hold only: still SUSPENDED, the named hold stays.
    seed = await api.call("POST", one + "/resume")
    assert seed.status == 200, seed.body
    assert seed.body["status"] == "SUSPENDED" and holds(seed.body) == ["maint:INC-9"]
    released = await api.call("POST", one + "/resume", {"hold": "maint:INC-9", "mode": "full"})
    assert released.status == 200, released.body
    assert released.body["status"] == "ACTIVE" and released.body["pause_holds"] == []
    assert released.headers["ETag"] == f'"{released.body["version"]}"'


async def test_bad_bodies_are_422_naming_the_field(api: Api) -> None:
    one = await new_sync(api)
    for route, body, field in (
        ("/pause", {"hold": "bulk:bulk_01J0000000000000000000000"}, "hold"),
        ("/pause", {"until": "in two hours"}, "until"),
        ("/pause", {"until": "P400D"}, "until"),
        ("/resume", {"mode": "everything"}, "mode"),
        ("/resume", {"run": "later"}, "run"),
        ("/pause", {"colour": "red"}, "colour"),
    ):
        answer = await api.call("POST", one + route, body)
        assert answer.status == 422, (body, answer.body)
        assert field in answer.text, (body, answer.body)
    unknown = await api.call("POST", one + "/resume", {"colour": "red"})
    assert "accepted_fields" in unknown.text and "force" in unknown.text


async def test_force_needs_the_admin_scope(api: Api, settings: Settings, tenant: Tenant) -> None:
    one = await new_sync(api)
    await api.call("POST", one + "/pause", {"hold": "maint:1"})
    await api.call("POST", one + "/pause", {"hold": "maint:2"})
    refused = await api.call("POST", one + "/resume", {"force": True})
    assert refused.status == 403, refused.body
    assert refused.error_type == "forbidden"
    admin = await key_with(settings, tenant, ["syncs:admin"])
    forced = await api.call("POST", one + "/resume", {"force": True}, key=admin)
    assert forced.status == 200, forced.body
    assert forced.body["status"] == "ACTIVE" and forced.body["pause_holds"] == []
