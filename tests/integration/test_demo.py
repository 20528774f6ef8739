"""``make demo`` (``synclife demo``) as a newcomer runs it: the Kafka path, then the HTTP
gateway, ending with the seed's resume as a real ``curl``."""

from __future__ import annotations

import os
import re

import pytest

from events.devtools.loadgen import serve_env
from events.service.settings import Settings
from tests.helpers.live import run_cli

pytestmark = pytest.mark.stack


async def test_the_demo_ends_with_the_seeds_resume_over_http(settings: Settings) -> None:
    env = {**os.environ, **serve_env(settings, "test-demo"), "SYNCLIFE_GATEWAY_PORT": "0"}
    code, out, err = await run_cli("demo", env=env)
    assert code == 0, err[-2000:]
    # The Kafka path: pause, a noop pause, resume.
    assert re.search(r"pause again\s+-> .*'outcome': 'noop'", out)
    # The HTTP path: a create with no id, provider or user, a pause, then curl's resume.
    assert re.search(r"POST /v1/buckets/bkt_marketing_assets/syncs -> HTTP 200 status=PENDING", out)
    assert re.search(r"/pause -> HTTP 200 status=SUSPENDED paused=True", out)
    assert "curl -sS -X POST http://127.0.0.1:" in out
    assert "-> status=ACTIVE paused=False is_active=True pause_reason=None" in out
    # The key is shown by name only: the curl reads it from the environment.
    assert re.search(r"Bearer \$SYNCLIFE_API_KEY", out)
    assert not re.search(r"sk_[A-Za-z0-9_-]{20,}", out + err)
