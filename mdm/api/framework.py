"""A small declarative layer over aiohttp routes: each route declares its scope, query, body and
response models once, and the same declarations produce the OpenAPI 3 document. A route cannot
exist without being documented, and the document cannot list a route that does not exist.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ValidationError

from mdm.api import audit
from mdm.api.auth import authenticate
from mdm.core.errors import InvalidArgument, ServiceError
from mdm.core.tokens import Principal

PRINCIPAL_KEY = web.RequestKey("mdm_principal", Principal)
MAX_ID = 2**62  # the largest integer id a path parameter may carry (documented as the maximum)
# Text path parameters (GUIDs, names, serials): also the pattern documented in the OpenAPI document.
_PATH_TEXT = re.compile(r"^[A-Za-z0-9._:@-]{1,255}$")
# A path parameter declared ``text_params``: a name given URL-encoded (spaces, quotes...), no
# control characters.
_FREE_TEXT = re.compile(r"^[^\x00-\x1f\x7f]{1,255}$")
RawHandler = Callable[..., Awaitable[Any]]


class UnsupportedMediaType(ServiceError):
    status = 415
    code = "unsupported_media_type"


def validation_details(exc: ValidationError) -> list[dict[str, Any]]:
    return [
        {"field": ".".join(str(p) for p in e["loc"]) or "(body)", "problem": e["msg"]}
        for e in exc.errors(include_url=False, include_context=False, include_input=False)
    ]


def _summarise(details: list[dict[str, Any]]) -> str:
    return "; ".join(f"{d['field']}: {d['problem']}" for d in details[:5])


@dataclass
class PathParam:
    name: str
    type: type = int
    description: str = ""
    free: bool = False  # a text_params parameter (see _FREE_TEXT)


@dataclass
class Operation:
    method: str
    path: str
    handler: RawHandler
    summary: str
    tag: str
    scope: str | None  # None: no authentication (health, metrics, OpenAPI)
    query: type[BaseModel] | None = None
    body: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    status: int = 200
    path_params: list[PathParam] = field(default_factory=list)
    errors: tuple[int, ...] = ()
    raw_response: str | None = None  # content type of a non-JSON response
    # A request for which the scope is not asked (e.g. /metrics from an allow-listed address),
    # with the sentence that says so in the document.
    open_to: Callable[[web.Request], bool] | None = None
    open_note: str = ""
    also_ok: tuple[int, ...] = ()  # other success statuses, with the same response body

    @property
    def operation_id(self) -> str:
        return self.handler.__name__


class ApiRouter:
    def __init__(self, prefix: str = "/api/v1") -> None:
        self.prefix = prefix
        self.operations: list[Operation] = []

    def route(
        self,
        method: str,
        path: str,
        *,
        summary: str,
        tag: str,
        scope: str | None,
        query: type[BaseModel] | None = None,
        body: type[BaseModel] | None = None,
        response: type[BaseModel] | None = None,
        status: int = 200,
        errors: tuple[int, ...] = (),
        raw_response: str | None = None,
        prefixed: bool = True,
        open_to: Callable[[web.Request], bool] | None = None,
        open_note: str = "",
        text_params: tuple[str, ...] = (),
        also_ok: tuple[int, ...] = (),
    ) -> Callable[[RawHandler], RawHandler]:
        full = (self.prefix if prefixed else "") + path
        params = [PathParam(n, int if n == "id" else str, free=n in text_params)
                  for n in re.findall(r"{(\w+)}", full)]

        def decorate(fn: RawHandler) -> RawHandler:
            self.operations.append(
                Operation(
                    method.upper(), full, fn, summary, tag, scope, query, body, response, status,
                    params, errors, raw_response, open_to, open_note, also_ok,
                )
            )
            return fn

        return decorate

    @classmethod
    def combine(cls, *routers: ApiRouter) -> ApiRouter:
        """One router holding the operations of ``routers`` (one document, one install)."""
        combined = cls()
        for router in routers:
            combined.operations.extend(router.operations)
        return combined

    # ---- wiring -------------------------------------------------------------------------------
    def install(self, app: web.Application) -> None:
        for op in self.operations:
            app.router.add_route(op.method, op.path, self._wrap(op), name=op.operation_id)

    def _wrap(self, op: Operation) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handler(request: web.Request) -> web.StreamResponse:
            principal: Principal | None = None
            if op.scope is not None and not (op.open_to is not None and op.open_to(request)):
                principal = await authenticate(request)
                request[PRINCIPAL_KEY] = principal
                if not principal.allows(op.scope):
                    await audit.denied(request, principal, op.operation_id, op.path, op.scope)
                    raise _Forbidden(
                        f"token {principal.name!r} lacks scope {op.scope!r}", required=op.scope
                    )

            async def arguments() -> dict[str, Any]:
                return await _arguments(op, request)

            async def run(kwargs: dict[str, Any]) -> web.StreamResponse:
                return _respond(op, await op.handler(request, **kwargs))

            if principal is None or request.method in audit.READ_ONLY:
                return await run(await arguments())
            done = audit.action(request, principal, op.operation_id, op.path)
            return await audit.audited(request, done, arguments, run)

        handler.__name__ = op.operation_id
        return handler

    # ---- OpenAPI --------------------------------------------------------------------------------
    def openapi(self, title: str, version: str) -> dict[str, Any]:
        components: dict[str, Any] = {"Error": _ERROR_SCHEMA}
        paths: dict[str, Any] = {}

        def ref(model: type[BaseModel]) -> dict[str, Any]:
            schema = model.model_json_schema(ref_template="#/components/schemas/{model}", by_alias=True)
            _drop_null_defaults(schema)
            for name, sub in schema.pop("$defs", {}).items():
                components[name] = sub
            components[model.__name__] = schema
            return {"$ref": f"#/components/schemas/{model.__name__}"}

        for op in self.operations:
            entry: dict[str, Any] = {
                "operationId": op.operation_id,
                "summary": op.summary,
                "tags": [op.tag],
                "parameters": [],
                "responses": {},
            }
            if op.scope is None:
                entry["security"] = []
            else:
                note = f" {op.open_note}" if op.open_note else ""
                entry["description"] = f"Requires scope `{op.scope}` (or `admin`).{note}"
            for param in op.path_params:
                schema: dict[str, Any] = (
                    {"type": "integer", "minimum": 1, "maximum": MAX_ID}
                    if param.type is int
                    else {"type": "string", "minLength": 1, "maxLength": 255,
                          "pattern": (_FREE_TEXT if param.free else _PATH_TEXT).pattern}
                )
                entry["parameters"].append(
                    {"name": param.name, "in": "path", "required": True, "schema": schema}
                )
            if op.query is not None:
                schema = op.query.model_json_schema()
                required = set(schema.get("required", []))
                for name, prop in schema.get("properties", {}).items():
                    prop = {k: v for k, v in prop.items() if k != "title"}
                    entry["parameters"].append(
                        {"name": name, "in": "query", "required": name in required, "schema": prop}
                    )
            if op.body is not None:
                entry["requestBody"] = {
                    "required": True,
                    "content": {"application/json": {"schema": ref(op.body)}},
                }
            ok: dict[str, Any] = {"description": "OK"}
            if op.response is not None:
                ok["content"] = {"application/json": {"schema": ref(op.response)}}
            elif op.raw_response:
                raw_type = "object" if op.raw_response == "application/json" else "string"
                ok["content"] = {op.raw_response: {"schema": {"type": raw_type}}}
            for code in (op.status, *op.also_ok):
                entry["responses"][str(code)] = ok
            codes = set(op.errors)
            if op.scope is not None:
                codes |= {401, 403}
            if op.body is not None or op.query is not None or op.path_params:
                codes.add(400)
            if op.body is not None:
                codes |= {413, 415}
            if op.path_params:
                codes.add(404)
            for code in sorted(codes):
                entry["responses"][str(code)] = {
                    "description": _REASONS.get(code, "Error"),
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
                }
            paths.setdefault(op.path, {})[op.method.lower()] = entry
        return {
            "openapi": "3.1.0",  # JSON Schema 2020-12, as pydantic writes it (null as a type)
            "info": {"title": title, "version": version},
            "servers": [{"url": "/"}],
            "paths": paths,
            "components": {
                "schemas": components,
                "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            },
            "security": [{"bearer": []}],
        }


async def _arguments(op: Operation, request: web.Request) -> dict[str, Any]:
    """The handler's keyword arguments: path parameters, query and body, checked."""
    kwargs: dict[str, Any] = {}
    for param in op.path_params:
        raw = request.match_info[param.name]
        if param.type is int:
            if not (raw.isascii() and raw.isdigit()) or len(raw) > 19 or int(raw) > MAX_ID:
                raise InvalidArgument(
                    f"path parameter {param.name} must be a positive integer (at most {MAX_ID})"
                )
            kwargs[param.name] = int(raw)
        elif param.free:
            if not _FREE_TEXT.fullmatch(raw):
                raise InvalidArgument(
                    f"path parameter {param.name} must be 1-255 characters, none of them a control character"
                )
            kwargs[param.name] = raw
        else:
            if not _PATH_TEXT.fullmatch(raw):
                raise InvalidArgument(
                    f"path parameter {param.name} must be 1-255 letters, digits or . _ : @ -"
                )
            kwargs[param.name] = raw
    if op.query is not None:
        known = {f.alias or name for name, f in op.query.model_fields.items()}
        for key, value in request.query.items():
            if "\x00" in key or "\x00" in value:
                raise InvalidArgument(f"query parameter {key!r} contains a NUL character")
            if key not in known:
                raise InvalidArgument(
                    f"unknown query parameter {key!r}", allowed=sorted(known)
                )
        try:
            kwargs["query"] = op.query.model_validate(dict(request.query))
        except ValidationError as exc:
            details = validation_details(exc)
            raise InvalidArgument(f"invalid query: {_summarise(details)}", fields=details) from None
    if op.body is not None:
        kwargs["body"] = await parse_json_body(request, op.body)
    return kwargs


def _respond(op: Operation, result: Any) -> web.StreamResponse:
    if isinstance(result, web.StreamResponse):
        return result
    if isinstance(result, BaseModel):
        text = result.model_dump_json(by_alias=True)
    else:
        text = json.dumps(result, default=str)
    return web.Response(text=text, status=op.status, content_type="application/json")


class _Forbidden(ServiceError):
    status = 403
    code = "forbidden"


_REASONS = {
    400: "Invalid request",
    401: "Missing or wrong bearer token",
    403: "Token lacks the required scope",
    404: "Not found",
    409: "Conflict with the current state",
    410: "Gone",
    413: "Body too large",
    415: "Body is not application/json",
    422: "Not supported for this device",
}

_ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "details": {"type": "object"},
                "request_id": {"type": "string"},
            },
        }
    },
}


async def parse_json_body(request: web.Request, model: type[BaseModel]) -> Any:
    ctype = request.content_type
    if ctype != "application/json":
        raise UnsupportedMediaType(
            f"expected Content-Type application/json, got {ctype or 'none'}"
        )
    raw = await request.read()
    try:
        data = json.loads(raw, parse_int=_json_int, parse_float=_json_float, parse_constant=_json_constant)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidArgument(f"body is not valid JSON: {exc}") from None
    except _NumberOutOfRange as exc:
        raise InvalidArgument(f"body is not acceptable JSON: {exc}") from None
    except RecursionError:
        raise InvalidArgument("body is not acceptable JSON: nested too deeply") from None
    where = _nul_in(data)
    if where is not None:
        # PostgreSQL text cannot hold U+0000; refuse it the same way on every engine.
        raise InvalidArgument(f"{where} contains a NUL character (\\u0000)")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        details = validation_details(exc)
        raise InvalidArgument(f"invalid body: {_summarise(details)}", fields=details) from None


class _NumberOutOfRange(ValueError):
    pass


# Number literals longer than this are refused before int() or float() sees them: Python raises
# ValueError past 4,300 integer digits, and int()'s cost grows with the square of the length.
# (Ranges are the models' business: ids, counts and plist integers have their own bounds.)
_MAX_NUMBER_LENGTH = 1000


def _json_int(text: str) -> int:
    if len(text) > _MAX_NUMBER_LENGTH:
        raise _NumberOutOfRange(f"a number of {len(text)} characters is out of range")
    return int(text)


def _json_float(text: str) -> float:
    if len(text) > _MAX_NUMBER_LENGTH:
        raise _NumberOutOfRange(f"a number of {len(text)} characters is out of range")
    value = float(text)
    if math.isinf(value):
        raise _NumberOutOfRange(f"number {text[:40]} is out of range")
    return value


def _json_constant(name: str) -> float:
    # NaN and Infinity are not JSON (Python's json accepts them); PostgreSQL's json would refuse them.
    raise _NumberOutOfRange(f"{name} is not a JSON number")


def _nul_in(value: Any) -> str | None:
    """Where the first string (or key) holding U+0000 is, or None. Iterative: bodies may nest deeply."""
    stack: list[tuple[Any, str]] = [(value, "body")]
    while stack:
        item, path = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return path
        elif isinstance(item, dict):
            for key, child in item.items():
                if "\x00" in key:
                    return path
                stack.append((child, f"{path}.{key}"))
        elif isinstance(item, list):
            stack.extend((child, f"{path}[{i}]") for i, child in enumerate(item))
    return None


def _admits_null(schema: dict[str, Any]) -> bool:
    if schema.get("type") == "null" or "null" in (schema.get("type") or []):
        return True
    return any(_admits_null(branch) for key in ("anyOf", "oneOf") for branch in schema.get(key, []))


def _drop_null_defaults(schema: Any) -> None:
    """``default: null`` on a field that cannot be null (an optional field left out keeps its value)
    is not a valid default: say nothing instead."""
    if isinstance(schema, dict):
        if "default" in schema and schema["default"] is None and not _admits_null(schema):
            del schema["default"]
        for value in schema.values():
            _drop_null_defaults(value)
    elif isinstance(schema, list):
        for value in schema:
            _drop_null_defaults(value)
