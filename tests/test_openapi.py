"""The OpenAPI document served at /api/openapi.json is valid OpenAPI 3 and lists exactly the routes
the admin listener serves: a route cannot be added without being documented."""

from __future__ import annotations

import httpx
from aiohttp import web
from openapi_spec_validator import validate

from mdm.api.plugin import openapi
from mdm.plugins import ADMIN_API, PLUGINS
from mdm.server.middleware import LISTENER_KEY
from mdm.server.runtime import Server, build_app

METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}


def served_routes(app: web.Application) -> set[tuple[str, str]]:
    """(METHOD, path) of every route of the application, sub-applications included."""
    routes: set[tuple[str, str]] = set()
    for resource in app.router.resources():
        subapp = getattr(resource, "_app", None)
        if isinstance(subapp, web.Application):  # add_subapp: its resources carry the prefix already
            routes |= served_routes(subapp)
            continue
        for route in resource:
            routes.add((route.method, resource.canonical))
    # aiohttp adds HEAD next to GET for add_get(); that HEAD is the same operation.
    return {(m, p) for m, p in routes if not (m == "HEAD" and ("GET", p) in routes)}


def documented_routes(doc: dict) -> set[tuple[str, str]]:
    return {
        (method.upper(), path) for path, item in doc["paths"].items() for method in item if method in METHODS
    }


def admin_app(server: Server) -> web.Application:
    return next(r.app for r in server.runners if r.app[LISTENER_KEY] == "admin")


async def test_document_is_valid_openapi_3(api: httpx.AsyncClient) -> None:
    r = await api.get("/api/openapi.json", headers={"Authorization": ""})
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("application/json")
    doc = r.json()
    assert doc["openapi"] == "3.1.0"
    validate(doc)  # raises OpenAPIValidationError with the offending pointer
    assert doc == openapi(ADMIN_API)  # what is served is what the code declares


async def test_paths_and_methods_equal_the_registered_routes(api: httpx.AsyncClient, server: Server) -> None:
    doc = (await api.get("/api/openapi.json")).json()
    served, documented = served_routes(admin_app(server)), documented_routes(doc)
    assert served - documented == set(), "routes served but not documented"
    assert documented - served == set(), "routes documented but not served"
    assert ("GET", "/api/v1/devices") in served and ("DELETE", "/api/v1/commands/{guid}") in served


async def test_an_undocumented_route_is_caught(server: Server) -> None:
    app = build_app(server.ctx, "admin", PLUGINS)

    async def sneaky(request: web.Request) -> web.Response:
        return web.Response(text="hi")

    app.router.add_get("/api/v1/sneaky", sneaky)
    sub = web.Application()
    sub.router.add_post("/thing", sneaky)
    app.add_subapp("/extra", sub)
    assert served_routes(app) - documented_routes(openapi(ADMIN_API)) == {
        ("GET", "/api/v1/sneaky"),
        ("POST", "/extra/thing"),
    }


async def test_every_operation_documents_its_errors(api: httpx.AsyncClient) -> None:
    doc = (await api.get("/api/openapi.json")).json()
    operation_ids = []
    for path, item in doc["paths"].items():
        for method, op in item.items():
            operation_ids.append(op["operationId"])
            codes = set(op["responses"])
            assert any(c.startswith("2") for c in codes), (method, path)
            public = op.get("security") == []
            if not public:
                assert {"401", "403"} <= codes, (method, path)
            if "{" in path:
                assert {"400", "404"} <= codes, (method, path)
                declared = {p["name"] for p in op["parameters"] if p["in"] == "path"}
                assert declared == {seg[1:-1] for seg in path.split("/") if seg.startswith("{")}
            if "requestBody" in op:
                assert {"400", "413", "415"} <= codes, (method, path)
            for code, response in op["responses"].items():
                if code[0] in "45":
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/Error"}, (method, path, code)
    assert len(operation_ids) == len(set(operation_ids)), "operationIds must be unique"
