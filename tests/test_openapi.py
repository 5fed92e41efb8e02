"""/openapi.json: a valid OpenAPI 3.1 document generated from the Input and Output models."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from openapi_spec_validator import OpenAPIV31SpecValidator, validate

import buttress as bt
from buttress.demo import service as demo
from buttress.http import create_app


@pytest.fixture
async def document(tmp_path: Path) -> AsyncIterator[dict[str, Any]]:
    """The demo's document as the HTTP endpoint serves it (no lifespan needed for it)."""
    runtime = demo.svc.build(bt.Settings(events_dir=str(tmp_path)))
    transport = httpx.ASGITransport(app=create_app(runtime))
    async with httpx.AsyncClient(transport=transport, base_url="http://buttress") as http:
        response = await http.get("/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    yield response.json()
    await runtime.stop()


def resolve(document: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        name = node["$ref"].removeprefix("#/components/schemas/")
        node = document["components"]["schemas"][name]
    return node


def test_document_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    assert document["openapi"] == "3.1.0"
    validate(document, cls=OpenAPIV31SpecValidator)  # raises with the first problem
    broken = {**document, "paths": {"/predict": {"post": {"responses": {"200": {}}}}}}
    with pytest.raises(Exception, match="description"):  # the validator does look
        validate(broken, cls=OpenAPIV31SpecValidator)


def test_request_schema_has_the_input_fields_under_their_names(
        document: dict[str, Any]) -> None:
    post = document["paths"]["/predict"]["post"]
    content = post["requestBody"]["content"]["application/json"]
    order = resolve(document, content["schema"])
    assert set(order["properties"]) == {"order_id", "user", "sub_orders"}
    assert set(order["required"]) == {"order_id", "user", "sub_orders"}
    sub_orders = order["properties"]["sub_orders"]
    assert (sub_orders["minItems"], sub_orders["maxItems"]) == (1, 50)
    sub_order = resolve(document, sub_orders["items"])
    assert set(sub_order["properties"]) == {"sub_order_id", "product_id", "price", "margin",
                                            "quantity"}
    assert "seller_margin" not in sub_order["properties"]  # aliases are not separate fields
    assert set(sub_order["required"]) == {"sub_order_id", "product_id", "price"}
    assert sub_order["properties"]["margin"]["default"] == 0.0
    user = resolve(document, order["properties"]["user"])
    assert set(user["properties"]) == {"id", "app_version"}
    assert user["required"] == ["id"]
    assert content["example"] == demo.EXAMPLE


def test_responses_name_the_output_the_errors_and_the_headers(
        document: dict[str, Any]) -> None:
    responses = document["paths"]["/predict"]["post"]["responses"]
    assert set(responses) >= {"200", "400", "413", "422", "503"}
    ok = responses["200"]
    output = resolve(document, ok["content"]["application/json"]["schema"])
    assert set(output["properties"]) == {"order_id", "discounts"}
    assert set(ok["headers"]) >= {"X-Request-Id", "X-Model-Version", "X-Fallback"}
    error = resolve(document, responses["422"]["content"]["application/json"]["schema"])
    inner = error["properties"]["error"]
    assert set(inner["required"]) == {"category", "message", "fields"}
    assert set(inner["properties"]["category"]["enum"]) == {c.value for c in bt.Category}
    parameters = {p["name"] for p in document["paths"]["/predict"]["post"]["parameters"]}
    assert {"X-Deadline-Ms", "X-Request-Id"} <= parameters


def test_a_service_without_output_model_is_still_valid(tmp_path: Path) -> None:
    from buttress.http.openapi import build_openapi

    class Query(bt.Input):
        x: int
        tags: list[str] = bt.field(default_factory=list)

    svc = bt.Service("plain", input=Query)

    @svc.respond
    def respond(q: Query) -> dict[str, int]:
        return {"x": q.x}

    document = build_openapi(svc)
    validate(document, cls=OpenAPIV31SpecValidator)
    query = resolve(document, document["paths"]["/predict"]["post"]["requestBody"]["content"][
        "application/json"]["schema"])
    assert query["properties"]["tags"]["maxItems"] == 1000  # the default list cap shows
