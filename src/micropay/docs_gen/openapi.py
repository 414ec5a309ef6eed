"""The app's OpenAPI document, and what it does not say: which API key kinds each route takes.

The key kinds come from the routes' dependencies (``Secret``, ``AnyKey``,
``Operator`` in :mod:`micropay.api.routes`), so the reference cannot drift from
the checks the server makes.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import fastapi.routing

from micropay.api import ApiConfig, create_app
from micropay.api import routes as api_routes
from micropay.api.keys import KINDS

# Every key kind, in the order the reference lists them.
ALL_KINDS: tuple[str, ...] = tuple(KINDS.values())
# The dependency that admits a key, and the kinds it admits.
KIND_GUARDS: dict[Callable[..., Any], frozenset[str]] = {
    api_routes.principal: frozenset(ALL_KINDS),
    api_routes.merchant_key: frozenset({"secret"}),
    api_routes.any_merchant_key: frozenset({"secret", "publishable"}),
    api_routes.operator_key: frozenset({"operator"}),
}
_HIDDEN_TEXT = {
    "openapi_url": "This OpenAPI document (JSON).",
    "docs_url": "Interactive documentation (Swagger UI) of this document.",
}


@dataclass(frozen=True)
class HiddenRoute:
    """A route the OpenAPI document leaves out (``include_in_schema=False``)."""

    methods: tuple[str, ...]
    path: str
    text: str


@dataclass(frozen=True)
class ApiModel:
    document: dict[str, Any]
    # (METHOD, path) -> the key kinds admitted; absent: no API key is asked for.
    key_kinds: dict[tuple[str, str], tuple[str, ...]] = field(default_factory=dict)
    hidden: tuple[HiddenRoute, ...] = ()


def api_model() -> ApiModel:
    """Build the app (no database is opened) and read its description and routes."""
    app = create_app(ApiConfig("sqlite:///:memory:"))
    try:
        document = app.openapi()
        key_kinds: dict[tuple[str, str], tuple[str, ...]] = {}
        hidden: list[HiddenRoute] = []
        builtin = {getattr(app, attr): text for attr, text in _HIDDEN_TEXT.items()}
        for route in _routes(app.routes):
            path = str(route.path)
            methods = tuple(sorted(m for m in (route.methods or ()) if m != "HEAD"))
            if not route.include_in_schema:
                if not (app.docs_url and path.startswith(f"{app.docs_url}/")):
                    hidden.append(HiddenRoute(methods, path, builtin.get(path) or _doc(route)))
                continue
            kinds = _admitted(getattr(route, "dependant", None))
            if kinds is not None:
                for method in methods:
                    key_kinds[(method, path)] = kinds
        return ApiModel(document, key_kinds, tuple(hidden))
    finally:
        app.state.runtime.close()


def _routes(routes: Any) -> Iterator[Any]:
    """Every route, with routers included by FastAPI (lazily in recent versions) flattened."""
    flatten = getattr(fastapi.routing, "iter_route_contexts", None)
    yield from (flatten(routes) if flatten is not None else routes)


def _admitted(dependant: Any) -> tuple[str, ...] | None:
    """The kinds every key guard in the dependency tree admits; None without a guard."""
    found: frozenset[str] | None = None
    for call in _calls(dependant):
        guard = KIND_GUARDS.get(call) if _hashable(call) else None
        if guard is not None:
            found = guard if found is None else found & guard
    return None if found is None else tuple(k for k in ALL_KINDS if k in found)


def _calls(dependant: Any) -> Iterator[Any]:
    for sub in getattr(dependant, "dependencies", ()) or ():
        yield sub.call
        yield from _calls(sub)


def _hashable(value: object) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def _doc(route: Any) -> str:
    endpoint = getattr(route, "endpoint", None)
    text = (inspect.getdoc(endpoint) if endpoint is not None else None) or ""
    return " ".join(text.split("\n\n", 1)[0].split())
