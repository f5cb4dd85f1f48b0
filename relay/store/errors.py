"""The store's errors, and the wording of a request model's complaint.

Shared by the admin API, the CLI and the dashboard. ``QueryError`` carries the HTTP status the API
answers with::

    QueryError
    ├── BadParam      400: a parameter's value is invalid; names the parameter and the value
    ├── BadRequest    400: the request as a whole is invalid
    ├── NotFound      404
    ├── Conflict      409
    └── TooBroad      422: a bulk selection matches too much

Filters and parameters are validated by the pydantic models of ``relay/store/params.py`` (the one
definition of their rules, which the OpenAPI document is generated from); ``validate`` words a
model's complaint as ``BadParam``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, TypeVar, get_args

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails

from relay.store import params

M = TypeVar("M", bound=BaseModel)


class QueryError(Exception):
    status = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadParam(QueryError):
    def __init__(self, param: str, value: object, reason: str) -> None:
        super().__init__(f"invalid {param}={value!r}: {reason}")
        self.param, self.value, self.reason = param, value, reason


class BadRequest(QueryError):
    pass


class NotFound(QueryError):
    status = 404


class Conflict(QueryError):
    status = 409


class TooBroad(QueryError):
    status = 422


def validate(model: type[M], data: Mapping[str, object], *, unknown: str = "parameter") -> M:
    """``data`` checked by ``model``; the first problem as ``BadParam`` naming the field and its value.

    ``unknown`` names what an undeclared key is ("parameter" in a query string, "field" in a body).
    """
    try:
        # query strings and forms carry text: a flag may be written "true" or "false" there only
        return model.model_validate(data, context={"text": unknown == "parameter"})
    except ValidationError as exc:
        errors = exc.errors()
        # an unknown name first: "status=failed" is a typo of state, whatever else is wrong
        first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
        raise _bad_param(model, data, first, unknown) from None


def _bad_param(model: type[BaseModel], data: Mapping[str, object], err: ErrorDetails, unknown: str) -> QueryError:
    names: list[str] = []
    for part in err["loc"]:
        if not isinstance(part, str):
            break  # an item of a list: the error names the list, with its value
        names.append(part)
    if not names:
        return BadRequest(err["msg"])  # a rule about the request as a whole
    value: object = data
    for name in names:
        value = value.get(name, err["input"]) if isinstance(value, Mapping) else err["input"]
    field, owner = _field(model, names)
    if err["type"] == params.BAD_PARAM:
        reason = err["msg"]
    elif err["type"] == "extra_forbidden":
        reason = f"unknown {unknown} (known: {', '.join(owner.model_fields)})"
    else:
        reason = _reason(field) or err["msg"]
    if isinstance(value, list) and len(value) > 10:
        value = f"[{len(value)} items]"  # the whole list would drown the reason
    return BadParam(".".join(names), value, reason)


def _field(model: type[BaseModel], names: list[str]) -> tuple[FieldInfo | None, type[BaseModel]]:
    """The field at ``names`` (dotted through nested models) and the model that holds it."""
    owner, info = model, None
    for i, name in enumerate(names):
        info = owner.model_fields.get(name)
        if info is None:
            return None, owner
        nested = _model_in(info.annotation)
        if nested is not None and i + 1 < len(names):
            owner = nested
    return info, owner


def _walk(annotation: Any) -> Iterator[Any]:
    """The annotation, its ``Annotated`` metadata and its type arguments, outermost first."""
    yield annotation
    yield from getattr(annotation, "__metadata__", ())
    for arg in get_args(annotation):
        yield from _walk(arg)


def _model_in(annotation: Any) -> type[BaseModel] | None:
    return next((t for t in _walk(annotation) if isinstance(t, type) and issubclass(t, BaseModel)), None)


def _reason(info: FieldInfo | None) -> str | None:
    """The field's ``Reason``: pydantic keeps a plain field's metadata apart, an optional one's in its type."""
    if info is None:
        return None
    found = [*info.metadata, *_walk(info.annotation)]
    return next((t.text for t in found if isinstance(t, params.Reason)), None)
