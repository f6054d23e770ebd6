"""Bounded inputs at a real uvicorn server: the key is checked and the size limited before the body is
read, batch ids are bounded like single ones, and no answer echoes unbounded input."""

from __future__ import annotations

import json
import socket
import time

import httpx
import pytest
from serving_models import make_feast_store, running_api, train_booster

from propensity.serving.app import create_app
from propensity.serving.contract import Contract
from propensity.serving.deploy import deploy_model
from propensity.serving.feature_source import FeastFeatureSource

pytestmark = pytest.mark.integration

KEY = "limits-key"
HUGE = 300_000_000  # declared, never sent


@pytest.fixture
def api(make_settings, tmp_path, monkeypatch):
    monkeypatch.setenv("PROPENSITY_API_KEYS", KEY)
    settings = make_settings(serving={"repository": str(tmp_path / "models")})
    deploy_model(settings, train_booster(seed=0), 1, "champion")
    source = FeastFeatureSource(
        make_feast_store(tmp_path / "feast", {"c-1": [1.0, 2.0, 3.0, 4.0, 0.0]}), "propensity_v1"
    )
    with running_api(create_app(settings, feature_source=source)) as url:
        yield url, Contract.from_settings(settings).body_limit()


def raw_exchange(url: str, head: str, body: bytes = b"", timeout_s: float = 5.0) -> tuple[int, dict, float]:
    """Send ``head`` (and ``body``) on a socket and read the answer without sending anything more."""
    host, port = url.removeprefix("http://").split(":")
    t0 = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=timeout_s) as sock:
        sock.sendall(head.encode() + body)
        data = b""
        while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < _length(data):
            chunk = sock.recv(65536)  # a server waiting for the rest of the body times this out
            if not chunk:
                break
            data += chunk
    elapsed = time.monotonic() - t0
    status = int(data.split(b" ", 2)[1])
    return status, json.loads(data.split(b"\r\n\r\n", 1)[1] or b"{}"), elapsed


def _length(data: bytes) -> int:
    for line in data.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":", 1)[1])
    return 0


def head(length: int | None, key: str | None = KEY, chunked: bool = False) -> str:
    lines = ["POST /predict HTTP/1.1", "Host: test", "Content-Type: application/json"]
    if key:
        lines.append(f"X-API-Key: {key}")
    lines.append("Transfer-Encoding: chunked" if chunked else f"Content-Length: {length}")
    return "\r\n".join(lines) + "\r\n\r\n"


def test_no_key_is_401_before_any_byte_of_the_body(api):
    url, _ = api
    status, body, elapsed = raw_exchange(url, head(HUGE, key=None))
    assert status == 401 and "API key" in body["detail"]
    assert elapsed < 5  # answered from the headers: the 300 MB were never awaited


def test_a_declared_body_over_the_limit_is_413_unread(api):
    url, limit = api
    status, body, _ = raw_exchange(url, head(HUGE))
    assert status == 413 and f"over {limit} bytes" in body["detail"]


def test_a_streamed_body_is_cut_at_the_limit(api):
    url, limit = api
    piece = b"x" * 8192
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for _ in range(limit // len(piece) + 2))
    status, body, _ = raw_exchange(url, head(None, chunked=True), chunks)  # no final chunk: never ends
    assert status == 413 and f"over {limit} bytes" in body["detail"]


def test_ids_in_a_batch_are_bounded_and_never_echoed(api):
    url, _ = api
    long_id = "7" * 10_000
    with httpx.Client(timeout=5) as client:
        r = client.post(f"{url}/predict", json={"customer_ids": ["c-1", long_id]}, headers={"X-API-Key": KEY})
        assert r.status_code == 422
        assert r.json()["detail"][0]["loc"] == ["body", "customer_ids", 1]
        assert long_id[:100] not in r.text and len(r.text) < 1000
        unknown = [f"u-{k}-" + "9" * 50 for k in range(60)]
        r = client.post(f"{url}/predict", json={"customer_ids": unknown}, headers={"X-API-Key": KEY})
        assert r.status_code == 404
        assert len(r.text) < 1200  # at most ten bounded ids named back
        assert unknown[0] in r.text and unknown[-1] not in r.text
