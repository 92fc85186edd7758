"""Pieces shared by the routers: documented error answers, bodies parsed in one pass, feeds.

``parse_json`` validates a hot endpoint's body straight from its bytes
with the pydantic model (one pass in pydantic-core, instead of FastAPI's
json.loads and then validation of the Python objects), and refuses it with
FastAPI's own 422 shape. Such an endpoint documents its body with
``json_body_doc`` and lists the model in ``RAW_BODY_MODELS`` so the app puts
its schema into the OpenAPI components.
"""

from __future__ import annotations

from typing import Any, TypeVar

from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from sqlalchemy import Connection, select

from nonstop.server.errors import BadRequest
from nonstop.server.models import feeds
from nonstop.server.schemas import CheckinRequest, ErrorBody

Model = TypeVar("Model", bound=BaseModel)
RAW_BODY_MODELS: list[type[BaseModel]] = [CheckinRequest]

Responses = dict[int | str, dict[str, object]]


def errors(**descriptions: str) -> Responses:
    """OpenAPI error answers, e.g. ``errors(e404="no such object")``: all are ``ErrorBody``."""
    return {
        int(code.removeprefix("e")): {"model": ErrorBody, "description": text}
        for code, text in descriptions.items()
    }


COMMON_ERRORS = errors(
    e400="the body is well-formed but not acceptable",
    e413="the body is over the server's size limit",
    e429="too many failed authentications",
    e503="the database is unavailable; retry",
    e507="the server's disk is full; nothing was stored",
)
ADMIN_ERRORS = COMMON_ERRORS | errors(
    e401="missing or invalid admin token",
    e403="the admin token lacks the needed scope",
    e404="no such object",
)


def bundle_file(description: str) -> Responses:
    """The 200 answer of an endpoint that returns a bundle file."""
    binary = {"schema": {"type": "string", "format": "binary"}}
    return {200: {"content": {"application/octet-stream": binary}, "description": description}}


def ensure_feed(connection: Connection, name: str) -> None:
    """400 (not 404) unless feed NAME exists: it is a value in the request body, not the
    resource the request addresses.
    """
    found = connection.execute(select(feeds.c.name).where(feeds.c.name == name)).scalar()
    if found is None:
        raise BadRequest(f"no feed named {name!r}")


def json_body_doc(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` of an endpoint that reads MODEL with ``parse_json``."""
    schema = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {"requestBody": {"content": {"application/json": {"schema": schema}}, "required": True}}


def parse_json(raw: bytes, content_type: str, model: type[Model]) -> Model:
    """RAW, sent with CONTENT_TYPE, as MODEL; else ``RequestValidationError`` (FastAPI's 422)."""
    try:
        if not raw:
            raise RequestValidationError(
                [{"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}]
            )
        if content_type.startswith("application/json"):
            return model.model_validate_json(raw)
        # A body not declared JSON is not parsed: refused as not an object, like FastAPI does.
        return model.model_validate(raw.decode("utf-8", errors="replace"))
    except ValidationError as exc:
        raise RequestValidationError(
            [_body_error(error) for error in exc.errors(include_url=False)]
        ) from None


def _body_error(error: Any) -> Any:
    located = error | {"loc": ("body", *error["loc"])}
    # Not JSON: the input is the raw bytes (perhaps not even UTF-8); do not echo them back.
    return located | {"input": {}} if error["type"] == "json_invalid" else located
