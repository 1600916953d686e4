"""Flower's SuperLink middleware scoped to their APIs: each layer passes every other request through unchanged, and
the SuperLink's app answers every API as Flower's own does."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterator

import flwr.superlink.main as superlink_main
import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from fedfusion import flower_compat
from fedfusion.deployment.coordinator import superlink_middleware

SCOPES = flower_compat.superlink_middleware_scopes()
BODY = b"\x08\x01"


def flower_app() -> FastAPI:
    """The SuperLink's app as Flower creates it (in-memory state), with SuperNode authentication on."""
    app = superlink_main.create_app()
    app.state.enable_supernode_auth = True
    return app


def route_paths() -> list[str]:
    """Every path the SuperLink's app serves, plus one it does not."""
    return sorted({route.path for route in flower_app().routes if isinstance(route, APIRoute)} | {"/v1/unknown"})


async def answer(request: Request) -> Response:
    """The app inside the layer: echoes the body, with a header of its own."""
    return Response(await request.body(), status_code=201, headers={"x-inner": request.url.path},
                    media_type="application/x-protobuf")


def post(app: Starlette | FastAPI, path: str, headers: dict[str, str] | None = None) -> httpx.Response:
    """POST `BODY` to `path` of `app` in this process."""
    async def send() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://superlink") as client:
            return await client.post(path, content=BODY, headers=headers or {})
    return asyncio.run(send())


def undated(content: bytes) -> bytes:
    """An answer with its ISO timestamps (the time it was made) blanked."""
    return re.sub(rb"\d{4}-\d\d-\d\dT[\d:.]+\+00:00", b"<time>", content)


@pytest.fixture
def flowers_stack(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[], list[Middleware]]]:
    """Flower's own stack builder; the SuperLink apps this test creates get it scoped, later tests Flower's own."""
    flowers: Callable[[], list[Middleware]] = superlink_main._get_middleware
    monkeypatch.setattr(superlink_main, "_get_middleware", flowers)
    superlink_middleware.install()
    yield flowers


def test_every_layer_of_flowers_stack_is_scoped_except_the_two_every_request_needs() -> None:
    stack = [layer.cls for layer in superlink_main._get_middleware()]
    unscoped = [cls for cls in stack if cls not in SCOPES]
    assert len(stack) == len(SCOPES) + 2 and set(SCOPES) <= set(stack)
    assert [getattr(cls, "__name__", "") for cls in unscoped] == ["BaseHTTPMiddleware",
                                                                  "ProtobufTranslationMiddleware"]


@pytest.mark.parametrize("layer", list(SCOPES), ids=lambda cls: cls.__name__)
def test_a_layer_passes_a_request_outside_its_api_through_unchanged(layer: type,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLWR_TRACING_ENABLED", "1")  # the Runtime's tracing layer at work
    outside = [path for path in route_paths() if not path.startswith(SCOPES[layer])]
    assert outside
    for path in outside:
        bare = post(Starlette(routes=[Route("/{path:path}", answer, methods=["POST"])]), path)
        layered = post(Starlette(routes=[Route("/{path:path}", answer, methods=["POST"])],
                                 middleware=[Middleware(layer)]), path)
        assert (layered.status_code, layered.content) == (bare.status_code, bare.content), path
        assert layered.headers.items() == bare.headers.items(), path


def test_a_scoped_layer_runs_for_its_own_api_and_not_for_another() -> None:
    class Stamp:
        def __init__(self, app: Starlette) -> None:
            self.app = app

        async def __call__(self, scope: dict[str, object], receive: object, send: object) -> None:
            raise RuntimeError(f"layer ran for {scope['path']}")

    app = Starlette(routes=[Route("/{path:path}", answer, methods=["POST"])], middleware=[
        Middleware(superlink_middleware.PathScopedMiddleware, middleware=Middleware(Stamp), prefixes=("/v1/fleet/",))])
    assert post(app, "/v1/runtime/pull-messages").headers["x-inner"] == "/v1/runtime/pull-messages"
    with pytest.raises(RuntimeError, match="layer ran for /v1/fleet/pull-messages"):
        post(app, "/v1/fleet/pull-messages")
    with pytest.raises(ValueError, match="path prefix"):
        superlink_middleware.PathScopedMiddleware(app, Middleware(Stamp), ())


@pytest.mark.parametrize("path", ["/v1/fleet/pull-messages", "/v1/fleet/push-object", "/v1/runtime/pull-messages",
                                  "/v1/runtime/acquire-task", "/v1/control/list-nodes", "/v1/control/start-run",
                                  "/health"])
def test_the_scoped_superlink_answers_as_flowers_own(
        path: str, flowers_stack: Callable[[], list[Middleware]]) -> None:
    headers = {"content-type": "application/protobuf"}
    scoped = post(flower_app(), path, headers)
    with pytest.MonkeyPatch.context() as flowers_own:
        flowers_own.setattr(superlink_main, "_get_middleware", flowers_stack)
        flowers = post(flower_app(), path, headers)
    assert (scoped.status_code, scoped.headers["content-type"], undated(scoped.content)) == (
        flowers.status_code, flowers.headers["content-type"], undated(flowers.content))
    if path.startswith("/v1/fleet/"):
        assert scoped.status_code == 401, scoped.text  # an unsigned Fleet request is still refused

