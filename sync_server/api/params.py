"""Query and path parameters through typed models, like bodies: a NUL byte, an integer beyond 64 bits or a malformed
value is a typed 4xx before any handler or driver sees it (issue 10.12), never a 500 from PostgreSQL."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, Final, TypeVar
from urllib.parse import unquote_to_bytes

from aiohttp import web
from annotated_types import Interval
from multidict import MultiMapping
from pydantic import BaseModel, BeforeValidator, ConfigDict, StringConstraints, ValidationError, create_model

from protocol import ErrorCode, ProtocolError, WireModel

MAX_BIGINT: Final = 2**63 - 1  # PostgreSQL bigint; a larger id cannot exist, so it must not reach the driver
_DIGITS = re.compile(r"^[0-9]{1,19}$")
_LIST_PARAMS = frozenset({"status"})
PATH: web.RequestKey[Any] = web.RequestKey("fieldsync.path", object)
QUERY: web.RequestKey[Any] = web.RequestKey("fieldsync.query", object)
P = TypeVar("P", bound=BaseModel)


def _digits_only(value: Any) -> Any:
    """Query text is digits or it is not an integer: no signs, spaces, underscores or non-ASCII digits ('²')."""
    if isinstance(value, str) and not _DIGITS.match(value):
        raise ValueError("expected a non-negative integer of at most 19 digits")
    return value


def ParamInt(lo: int = 0, hi: int = MAX_BIGINT) -> Any:  # noqa: N802 - reads as a type in model fields
    """An integer parameter bounded to what PostgreSQL's bigint (or a smaller column) can hold."""
    return Annotated[int, Interval(ge=lo, le=min(hi, MAX_BIGINT)), BeforeValidator(_digits_only)]


PathText = Annotated[str, StringConstraints(min_length=1, max_length=255)]


class ParamModel(WireModel):
    """Base of query and path models: query strings are text, so types are converted (not strict)."""

    model_config = ConfigDict(strict=False)


def text_ok(value: str) -> bool:
    """NUL cannot be stored in PostgreSQL text; a lone surrogate cannot be encoded as UTF-8."""
    if "\x00" in value:
        return False
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return False
    return True


def query_is_utf8(request: web.Request) -> bool:
    """Whether the query's percent-escapes spell UTF-8. yarl decodes a bad one to U+FFFD without a word, so a
    UTF-8-encoded lone surrogate (%ED%A0%80) or a Latin-1 byte (%E9) would arrive as another character and be
    looked up as a name instead of refused like the same text in a body."""
    raw = request.rel_url.raw_query_string
    if "%" not in raw:
        return True
    try:
        unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _errors(exc: ValidationError) -> dict[str, Any]:
    errors = [{"loc": ".".join(str(p) for p in e["loc"])[:200], "msg": e["msg"][:200]}
              for e in exc.errors(include_url=False, include_input=False, include_context=False)[:20]]
    return {"errors": errors, "error_count": exc.error_count()}


def _invalid_query(key: str, msg: str) -> ProtocolError:
    return ProtocolError(ErrorCode.VALIDATION_FAILED, "query does not match the schema",
                         {"errors": [{"loc": key[:200], "msg": msg}], "error_count": 1})


def parse_query(query: MultiMapping[str], model: type[P], *, utf8: bool = True) -> P:
    """Query string into `model`: list parameters may repeat or be comma lists, others appear once; else a typed 422
    (also when `utf8` is False: the raw query's escapes were not UTF-8, see query_is_utf8)."""
    if not utf8:
        raise _invalid_query("query", "a query parameter is not UTF-8")
    data: dict[str, Any] = {}
    for key in set(query.keys()):
        values = query.getall(key)
        if not all(text_ok(v) for v in values) or not text_ok(key):
            raise _invalid_query("query", "NUL or invalid characters in a query parameter")
        if key in _LIST_PARAMS:
            data[key] = [part.strip() for v in values for part in v.split(",") if part.strip()]
        elif len(values) > 1:
            raise _invalid_query(key, "repeated")
        else:
            data[key] = values[0]
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ProtocolError(ErrorCode.VALIDATION_FAILED, "query does not match the schema", _errors(exc)) from None


def parse_path(match_info: Mapping[str, str], model: type[P]) -> P:
    """Path parameters into `model`; a malformed id names nothing that exists, so it is a 404 like an unknown one."""
    # digits beyond bigint name nothing, whatever type the route's model gives the parameter (or a handler's int())
    if not all(text_ok(v) and not (v.isascii() and v.isdigit() and len(v) > 18 and int(v) > MAX_BIGINT)
               for v in match_info.values()):
        raise ProtocolError(ErrorCode.NOT_FOUND, "no such resource")
    try:
        return model.model_validate(dict(match_info))
    except ValidationError:
        raise ProtocolError(ErrorCode.NOT_FOUND, "no such resource") from None


def read_query(request: web.Request, model: type[P]) -> P:
    """The request's query as `model` (parsed once by the route wrapper, else here)."""
    cached = request.get(QUERY)
    return cached if isinstance(cached, model) else parse_query(request.query, model, utf8=query_is_utf8(request))


def read_path(request: web.Request, model: type[P]) -> P:
    """The request's path parameters as `model` (parsed once by the route wrapper, else here)."""
    cached = request.get(PATH)
    return cached if isinstance(cached, model) else parse_path(request.match_info, model)


def default_path_model(path: str, names: list[str]) -> type[ParamModel]:
    """Routes that name no path model still get bounded, NUL-free text for each parameter."""
    fields: dict[str, Any] = {name: (PathText, ...) for name in names}
    name = "Path_" + re.sub(r"[^0-9A-Za-z]+", "_", path).strip("_")
    return create_model(name, __base__=ParamModel, **fields)
