"""The predict/infer routes served past Starlette's router and FastAPI's request handler.

Nearly every request is a POST to a predict or infer route, and those routes take no FastAPI dependencies
(service/deps.py, `check_inference_token`): each one is `endpoint(name, [version,] request) -> Response`. Reaching
it through the framework costs about a quarter of the event loop's time per request under load (py-spy, wrk at 8
connections; BENCHMARKS.md section 1): the exception middleware, FastAPI's exit stacks, the router trying routes,
and FastAPI's request handler solving an empty dependency list, each an extra coroutine layer on the way in and
out. `HotRoutes` sits just inside the service's own middleware and calls those endpoints directly:

- the same routes (`APIRoute.matches`: the same paths, path parameters, and `scope["route"]`, which the access log
  and latency metrics label by), only for POST; anything else goes on to the app, which answers as before (405
  for another method on these paths, every other route, the OpenAPI schema, which still lists them);
- the same errors: an exception from the endpoint is rendered by the app's handler for its type (the
  `{"error": ...}` body and the error counter of service/errors.py); one without a handler (the catch-all for
  `Exception` belongs to Starlette's outermost middleware) propagates as it did through the framework.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match
from starlette.types import ASGIApp, Receive, Scope, Send

ExceptionHandler = Callable[[Request, Exception], Any]


class HotRoutes:
    """Serves POST requests to `routes` by calling their endpoints; everything else goes to `app`."""

    def __init__(self, app: ASGIApp, routes: Sequence[APIRoute], handlers: Mapping[Any, ExceptionHandler]) -> None:
        self.app = app
        self.routes = tuple(routes)
        # By exception class only, as Starlette's exception middleware has them; the `Exception` catch-all and
        # handlers by status code are not for exceptions raised by an endpoint before its response exists.
        self.handlers = {key: handler for key, handler in handlers.items() if isinstance(key, type)}
        self.handlers.pop(Exception, None)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            for route in self.routes:
                match, child_scope = route.matches(scope)
                if match is Match.FULL:
                    scope.update(child_scope)
                    await self._serve(route, scope, receive, send)
                    return
        await self.app(scope, receive, send)

    async def _serve(self, route: APIRoute, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive, send)
        try:
            response: Response = await route.endpoint(request=request, **scope["path_params"])
        except Exception as exc:
            handler = self._handler_for(exc)
            if handler is None:
                raise
            response = handler(request, exc)
            if inspect.isawaitable(response):
                response = await response
        await response(scope, receive, send)

    def _handler_for(self, exc: Exception) -> ExceptionHandler | None:
        for cls in type(exc).__mro__:
            if cls in self.handlers:
                return self.handlers[cls]
        return None
