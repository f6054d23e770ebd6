"""What :mod:`propensity.serving.starlette_compat` relies on in Starlette and FastAPI, pinned.

``DirectRoute`` answers ``POST /predict`` before routing: it must sit right inside Starlette's
``ServerErrorMiddleware`` (unexpected errors still answered 500), FastAPI's dependencies and
exception handlers must not run for it, and the app must answer every request exactly as its
own FastAPI route (the fallback) and a plain Starlette ``Route`` would.
"""

from __future__ import annotations

import asyncio
import logging

import pytest
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from serving_models import make_feast_store
from starlette.middleware.errors import ServerErrorMiddleware
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.routing import Route

from propensity.serving import starlette_compat
from propensity.serving.app import create_app
from propensity.serving.deploy import deploy_model
from propensity.serving.feature_source import FeastFeatureSource
from propensity.serving.starlette_compat import DirectRoute, install_direct_route

KEY = "contract-key"
CUSTOMERS = {"17850": [3.0, 12.0, 540.5, 380.0, 0.05], "13047": [40.0, 2.0, 80.0, 200.0, 0.0]}


@pytest.fixture
def make_app(make_settings, tmp_path, monkeypatch, booster):
    monkeypatch.setenv("PROPENSITY_API_KEYS", KEY)
    settings = make_settings(serving={"repository": str(tmp_path / "models")})
    deploy_model(settings, booster, 1, "champion")
    source = FeastFeatureSource(make_feast_store(tmp_path / "feast", CUSTOMERS), "propensity_v1")
    return lambda: create_app(settings, feature_source=source)


def without_direct_route(app: FastAPI) -> FastAPI:
    """The same app answering /predict with its FastAPI route (what the fallback leaves)."""
    app.user_middleware[:] = [m for m in app.user_middleware if m.cls is not DirectRoute]
    return app


def with_plain_route(app: FastAPI) -> FastAPI:
    (route,) = [r for r in app.router.routes if isinstance(r, APIRoute) and r.path == "/predict"]
    app.router.routes.insert(0, Route("/predict", route.endpoint, methods=["POST"]))
    return without_direct_route(app)


def test_it_sits_right_inside_the_server_error_middleware(make_app):
    app = make_app()
    stack = app.build_middleware_stack()
    assert isinstance(stack, ServerErrorMiddleware)
    assert isinstance(stack.app, DirectRoute) and (stack.app.method, stack.app.path) == ("POST", "/predict")
    inner, chain = stack.app.app, []
    while inner is not None and not isinstance(inner, ExceptionMiddleware):
        chain.append(type(inner).__name__)
        inner = getattr(inner, "app", None)
    assert inner is not None, chain  # FastAPI's handlers (and other middleware): after it, never for /predict


REQUESTS = [
    ({"customer_id": "17850"}, KEY),
    ({"customer_ids": ["13047", "17850", "13047"]}, KEY),
    ({"customer_ids": ["17850", "nobody"]}, KEY),  # 404
    ({"customer_id": "17850"}, None),  # 401
    ({"customer_id": "17850"}, "wrong"),  # 401
    ({"customer_ids": [str(i) for i in range(101)]}, KEY),  # 413
    ({"customer_id": 17850}, KEY),  # 422
    ({"customer_id": "1", "customer_ids": ["2"]}, KEY),  # 422
    (b'{"customer_id": ', KEY),  # 422: invalid JSON
    (b"customer_id=17850", KEY),  # 422: not JSON at all
]


def answers(app: FastAPI) -> list[tuple]:
    out = []
    with TestClient(app) as client:
        for body, key in REQUESTS:
            headers = {"X-API-Key": key} if key else {}
            if isinstance(body, bytes):
                r = client.post(
                    "/predict", content=body, headers={**headers, "content-type": "application/json"}
                )
            else:
                r = client.post("/predict", json=body, headers=headers)
            out.append((r.status_code, r.headers["content-type"], r.content))
        r = client.get("/predict")  # another method: on to the router
        out.append((r.status_code, r.headers.get("allow"), r.content))
        r = client.post(
            "/predict/", json={"customer_id": "17850"}, headers={"X-API-Key": KEY}, follow_redirects=False
        )
        out.append((r.status_code, r.headers.get("location"), r.content))
    return out


def test_the_answers_are_those_of_the_fastapi_route_and_of_a_plain_route(make_app):
    direct = answers(make_app())
    assert [a[0] for a in direct] == [200, 200, 404, 401, 401, 413, 422, 422, 422, 422, 405, 307]
    assert answers(without_direct_route(make_app())) == direct
    assert answers(with_plain_route(make_app())) == direct


def test_when_the_check_fails_the_fastapi_route_answers_the_same(make_app, monkeypatch, caplog):
    direct = answers(make_app())
    monkeypatch.setattr(starlette_compat, "direct_route_problem", lambda: "simulated: Headers changed")
    with caplog.at_level(logging.WARNING, logger=starlette_compat.__name__):
        app = make_app()
    assert not [m for m in app.user_middleware if m.cls is DirectRoute]
    assert [r.getMessage() for r in caplog.records if r.name == starlette_compat.__name__] == [
        "POST /predict answered by the app's own route (slower): simulated: Headers changed"
    ]
    assert answers(app) == direct


def test_the_shapes_checked_are_there():
    assert starlette_compat.direct_route_problem() is None


def small_app(answer) -> tuple[FastAPI, list[str]]:
    """A FastAPI app with an app-wide dependency, a handler for ValueError, /predict and /other."""
    calls: list[str] = []

    def dependency(request: Request) -> None:
        calls.append(request.url.path)

    app = FastAPI(dependencies=[Depends(dependency)])

    @app.exception_handler(ValueError)
    async def _value_error(request: Request, exc: ValueError) -> JSONResponse:
        calls.append("handler")
        return JSONResponse({"detail": str(exc)}, status_code=418)

    @app.post("/predict")
    async def predict(request: Request) -> Response:
        return await answer(await request.body(), request.headers)

    @app.get("/other")
    def other() -> dict:
        return {"ok": True}

    return app, calls


def test_fastapi_dependencies_and_exception_handlers_never_run_for_it():
    async def answer(raw: bytes, headers) -> Response:
        if raw == b"boom":
            raise ValueError("boom")
        return Response(raw[::-1], media_type="text/plain")

    app, calls = small_app(answer)
    assert install_direct_route(app, "POST", "/predict", answer)
    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.post("/predict", content=b"abc").content == b"cba"
        assert calls == []  # no dependency for /predict
        r = client.post("/predict", content=b"boom")
        assert (r.status_code, r.text) == (500, "Internal Server Error")  # as any unhandled error
        assert calls == []  # the ValueError handler did not run either
        assert client.get("/other").json() == {"ok": True} and calls == ["/other"]
    # The same app without it: FastAPI's route runs the dependency and the handler.
    app, calls = small_app(answer)
    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.post("/predict", content=b"abc").content == b"cba"
        assert client.post("/predict", content=b"boom").status_code == 418
        assert calls == ["/predict", "/predict", "handler"]


def run_asgi(app, messages: list[dict]) -> list[dict]:
    sent: list[dict] = []
    incoming = iter(messages)

    async def receive() -> dict:
        return next(incoming)

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/predict",
        "headers": [(b"content-type", b"text/plain")],
        "query_string": b"",
    }
    asyncio.run(app(scope, receive, send))
    return sent


def test_a_body_in_chunks_is_joined_and_a_disconnect_is_not_answered():
    seen = []

    async def answer(raw: bytes, headers) -> Response:
        seen.append((raw, headers["content-type"]))
        return Response(b"ok", media_type="text/plain")

    async def app(scope, receive, send) -> None:  # nothing but DirectRoute should answer
        raise AssertionError(f"passed on: {scope['path']}")

    route = DirectRoute(app, "POST", "/predict", answer)
    chunks = [
        {"type": "http.request", "body": b"ab", "more_body": True},
        {"type": "http.request", "body": b"cd", "more_body": False},
    ]
    sent = run_asgi(route, chunks)
    assert seen == [(b"abcd", "text/plain")]
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 200
    assert sent[-1]["body"] == b"ok"
    early = [{"type": "http.request", "body": b"ab", "more_body": True}, {"type": "http.disconnect"}]
    assert run_asgi(route, early) == [] and len(seen) == 1
