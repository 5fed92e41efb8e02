"""The OpenAPI 3.1 document, generated from the service's Input and Output models."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic.json_schema import models_json_schema

from buttress import __version__
from buttress.resilience.categories import Category

if TYPE_CHECKING:
    from buttress.service import Service

REF = "#/components/schemas/{model}"


def _error_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["error"],
        "properties": {"error": {
            "type": "object",
            "required": ["category", "message", "fields"],
            "properties": {
                "category": {"type": "string", "enum": [c.value for c in Category]},
                "message": {"type": "string"},
                "fields": {"type": "array", "items": {
                    "type": "object",
                    "properties": {k: {"type": "string"} for k in
                                   ("field", "kind", "expected", "received", "message")},
                }},
            },
        }},
    }


def _json(ref: str, description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": ref}}}}


def _plain(description: str) -> dict[str, Any]:
    return {"get": {"summary": description, "responses": {"200": {"description": "OK"}}}}


def build_openapi(service: Service) -> dict[str, Any]:
    models: list[Any] = [(service.input, "validation")]
    if service.output is not None:
        models.append((service.output, "serialization"))
    refs, defs = models_json_schema(models, by_alias=False, ref_template=REF)
    schemas: dict[str, Any] = dict(defs.get("$defs", {}))
    schemas["Error"] = _error_schema()
    input_ref = refs[(service.input, "validation")]["$ref"]
    error = "#/components/schemas/Error"
    request_body: dict[str, Any] = {"required": True, "content": {"application/json": {
        "schema": {"$ref": input_ref}}}}
    if service.example is not None:
        request_body["content"]["application/json"]["example"] = service.example
    ok: dict[str, Any] = (
        _json(refs[(service.output, "serialization")]["$ref"], "The prediction")
        if service.output is not None else {"description": "The prediction"})
    fallback_header = {"description": "Comma list of error categories whose fallback was "
                       "applied; absent when none", "schema": {"type": "string"}}
    ok["headers"] = {
        "X-Request-Id": {"schema": {"type": "string"}},
        "X-Model-Version": {"schema": {"type": "string"}},
        "X-Cache": {"schema": {"type": "string", "enum": ["hit", "miss", "bypass"]}},
        "X-Fallback": fallback_header,
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": service.name, "version": __version__,
                 "description": service.description or f"{service.name}, served by buttress"},
        "paths": {
            "/predict": {"post": {
                "summary": "Predict",
                "operationId": "predict",
                "parameters": [
                    {"name": "X-Deadline-Ms", "in": "header", "required": False,
                     "schema": {"type": "number", "minimum": 0},
                     "description": "Lower the deadline for this request (capped by config)."},
                    {"name": "X-Request-Id", "in": "header", "required": False,
                     "schema": {"type": "string"}},
                    {"name": "Cache-Control", "in": "header", "required": False,
                     "schema": {"type": "string"},
                     "description": "no-cache skips the response cache."},
                ],
                "requestBody": request_body,
                "responses": {
                    "200": ok,
                    "400": _json(error, "Malformed JSON or too deeply nested"),
                    "413": _json(error, "Body too large"),
                    "422": _json(error, "Required fields missing or invalid (all listed)"),
                    "503": _json(error, "A stage without a fallback failed"),
                },
            }},
            "/healthz": _plain("Liveness: the process answers"),
            "/readyz": _plain("Readiness: the model is loaded and warm"),
            "/metrics": _plain("Prometheus metrics"),
        },
        "components": {"schemas": schemas},
    }
