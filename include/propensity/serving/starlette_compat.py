"""Starlette behind one module: one route answered before routing, by an ASGI middleware.

:class:`DirectRoute` answers one method and path with ``answer(body, headers)`` and passes every
other request on. What it relies on, checked once by :func:`install_direct_route` (and pinned by
``tests/unit/serving/test_starlette_contract.py``):

* the ASGI HTTP messages (``http.request`` with ``more_body``, ``http.disconnect``) and
  Starlette's ``Headers(scope=)`` and ``Response.__call__(scope, receive, send)``;
* ``add_middleware`` placing it inside ``ServerErrorMiddleware`` (an unexpected error is still
  answered 500, as a route's would be) and outside FastAPI's ``ExceptionMiddleware``, router,
  dependencies and exception handlers, none of which run for the path: ``answer`` validates and
  turns its own errors into responses.

When the check fails the middleware is not installed (one log line) and the app's own route for
the path answers, with the same function behind it.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.datastructures import Headers
from starlette.middleware.errors import ServerErrorMiddleware
from starlette.responses import Response

log = logging.getLogger(__name__)

Answer = Callable[[bytes, Headers], Awaitable[Response]]
BeforeBody = Callable[[Headers], Response | None]  # an answer from the headers alone (e.g. 401)
TooLarge = Callable[[int], Response]  # the answer to a body over the limit (its size so far)


def declared_too_large(headers: Headers, limit: int | None) -> int | None:
    """The declared Content-Length when it is over ``limit`` (None: not declared over it)."""
    declared = headers.get("content-length", "")
    if limit is not None and declared.isdigit() and int(declared) > limit:
        return int(declared)
    return None


class DirectRoute:
    """ASGI middleware: one method and path answered by ``answer(body, headers)`` directly.

    Before any byte of the body is read, ``before_body(headers)`` may answer (a missing key: 401)
    and a declared Content-Length over ``max_body`` is answered ``too_large``; while reading, a
    body that grows past ``max_body`` is answered at once, without reading the rest. Everything
    else goes on to the app. Unexpected errors propagate to Starlette's ServerErrorMiddleware,
    outside this one, as a route's would.
    """

    def __init__(
        self,
        app: Any,
        method: str,
        path: str,
        answer: Answer,
        *,
        before_body: BeforeBody | None = None,
        max_body: int | None = None,
        too_large: TooLarge | None = None,
    ) -> None:
        self.app, self.method, self.path, self.answer = app, method, path, answer
        self.before_body, self.max_body = before_body, max_body
        self.too_large = too_large or (lambda n: Response(f"request body over {max_body} bytes", 413))

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != self.path or scope["method"] != self.method:
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        early = self.before_body(headers) if self.before_body is not None else None
        if early is None and (declared := declared_too_large(headers, self.max_body)) is not None:
            early = self.too_large(declared)
        if early is not None:
            await early(scope, receive, send)
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if self.max_body is not None and size > self.max_body:
                await self.too_large(size)(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        response = await self.answer(b"".join(chunks), headers)
        await response(scope, receive, send)


def install_direct_route(app: Any, method: str, path: str, answer: Answer, **options: Any) -> bool:
    """Answer ``method path`` with :class:`DirectRoute` if the app has the shape it relies on.

    ``options``: DirectRoute's keywords (``before_body``, ``max_body``, ``too_large``). Returns
    whether it did; if not (logged), the app's own route for the path answers.
    """
    problem = direct_route_problem()
    if problem is None:
        app.add_middleware(DirectRoute, method=method, path=path, answer=answer, **options)
        # Where add_middleware put it: right inside ServerErrorMiddleware, before anything else.
        stack = app.build_middleware_stack()
        inner = getattr(stack, "app", None)
        if not (isinstance(stack, ServerErrorMiddleware) and isinstance(inner, DirectRoute)):
            app.user_middleware[:] = [m for m in app.user_middleware if m.cls is not DirectRoute]
            problem = f"middleware stack is {type(stack).__name__} -> {type(inner).__name__}"
    if problem is not None:
        log.warning("%s %s answered by the app's own route (slower): %s", method, path, problem)
        return False
    return True


def direct_route_problem() -> str | None:
    """Why :class:`DirectRoute` cannot run here (None: it can)."""
    try:
        if "scope" not in inspect.signature(Headers).parameters:
            return "starlette Headers() takes no scope"
        if list(inspect.signature(Response.__call__).parameters) != ["self", "scope", "receive", "send"]:
            return "starlette Response is not an ASGI callable"
    except (TypeError, ValueError) as exc:
        return f"no signature: {exc}"
    return None
