"""GeoReport v2 response schemas written by hand from the spec's tables (field, type, required), and checkers for
both formats: a JSON answer is checked value by value, an XML answer element by element (text parsed by type)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import datetime
from typing import Any

# type names: str, bool ('true'/'false' in XML), int, float, datetime (W3C), or a tuple of allowed strings
Field = tuple[Any, bool]  # (type, required)

SERVICE: dict[str, Field] = {
    "service_code": (str, True), "service_name": (str, True), "description": (str, False),
    "metadata": (bool, True), "type": (("realtime", "batch", "blackbox"), True), "keywords": (str, False),
    "group": (str, False),
}
VALUE: dict[str, Field] = {"key": (str, True), "name": (str, True)}
ATTRIBUTE: dict[str, Field] = {
    "variable": (bool, True), "code": (str, True),
    "datatype": (("string", "number", "datetime", "text", "singlevaluelist", "multivaluelist"), True),
    "required": (bool, True), "datatype_description": (str, False), "order": (int, True),
    "description": (str, True),
}
DEFINITION: dict[str, Field] = {"service_code": (str, True)}
REQUEST: dict[str, Field] = {
    "service_request_id": (str, True), "status": (("open", "closed"), True), "status_notes": (str, False),
    "service_name": (str, False), "service_code": (str, False), "description": (str, False),
    "agency_responsible": (str, False), "service_notice": (str, False), "requested_datetime": ("datetime", False),
    "updated_datetime": ("datetime", False), "expected_datetime": ("datetime", False), "address": (str, False),
    "address_id": (str, False), "zipcode": (str, False), "lat": (float, False), "long": (float, False),
    "media_url": (str, False),
}
# every service is realtime: service_request_id, and no token ("should not be returned if service_request_id is")
POST_RESPONSE: dict[str, Field] = {"service_request_id": (str, True), "service_notice": (str, False),
                                   "account_id": (str, False)}
TOKEN: dict[str, Field] = {"service_request_id": (str, False), "token": (str, True)}
ERROR: dict[str, Field] = {"code": (int, True), "description": (str, True)}
EXTENSIONS = {"extended_attributes"}  # the only field beyond the spec's tables we allow (extensions=true)


def _datetime(text: str) -> datetime:
    ts = datetime.fromisoformat(text.replace("Z", "+00:00"))
    assert ts.tzinfo is not None, f"{text!r} has no offset"
    return ts


def _check_json_value(name: str, kind: Any, value: Any) -> None:
    if isinstance(kind, tuple):
        assert value in kind, f"{name}={value!r} not one of {kind}"
    elif kind == "datetime":
        assert isinstance(value, str), f"{name} must be a W3C string"
        _datetime(value)
    elif kind is float:
        assert isinstance(value, (int, float)) and not isinstance(value, bool), f"{name} must be a number"
    elif kind is int:
        assert isinstance(value, int) and not isinstance(value, bool), f"{name} must be an integer"
    else:
        assert isinstance(value, kind), f"{name}={value!r} is not {kind.__name__}"


def check_json(record: dict[str, Any], schema: dict[str, Field], extra: set[str] = frozenset()) -> None:  # type: ignore[assignment]
    """Every required field present and non-null, every present field of its type, nothing unknown."""
    unknown = set(record) - set(schema) - set(extra) - EXTENSIONS
    assert not unknown, f"fields outside the spec: {unknown}"
    for name, (kind, required) in schema.items():
        value = record.get(name)
        if value is None:
            assert not required, f"required field {name} missing"
            continue
        _check_json_value(name, kind, value)


def _check_xml_text(name: str, kind: Any, text: str) -> None:
    if isinstance(kind, tuple):
        assert text in kind, f"<{name}>{text}</{name}> not one of {kind}"
    elif kind is bool:
        assert text in ("true", "false"), f"<{name}> must be true or false"
    elif kind is int:
        int(text)
    elif kind is float:
        float(text)
    elif kind == "datetime":
        _datetime(text)


def check_xml_element(el: ET.Element, schema: dict[str, Field], extra: set[str] = frozenset()) -> None:  # type: ignore[assignment]
    """Same rules for one XML element: children named by the table, typed text, required ones non-empty."""
    children = {c.tag: c for c in el}
    unknown = set(children) - set(schema) - set(extra) - EXTENSIONS
    assert not unknown, f"<{el.tag}> has elements outside the spec: {unknown}"
    for name, (kind, required) in schema.items():
        child = children.get(name)
        if child is None or not (child.text or "").strip():
            assert not required, f"<{el.tag}> lacks required <{name}>"
            continue
        _check_xml_text(name, kind, child.text or "")


def parse_list(body: bytes, root: str, item: str, schema: dict[str, Field]) -> list[ET.Element]:
    """An XML list answer: the right root, only `item` children, each valid."""
    top = ET.fromstring(body)
    assert top.tag == root, f"root is <{top.tag}>, expected <{root}>"
    items = list(top)
    assert all(i.tag == item for i in items), f"<{root}> holds other elements than <{item}>"
    for i in items:
        check_xml_element(i, schema)
    return items


def check_definition_json(doc: dict[str, Any]) -> None:
    """A service definition: service_code plus attributes, each with its values for list datatypes."""
    check_json(doc, DEFINITION, {"attributes"})
    assert isinstance(doc["attributes"], list)
    for a in doc["attributes"]:
        check_json(a, ATTRIBUTE, {"values"})
        if a["datatype"].endswith("valuelist"):
            assert a["values"], f"list attribute {a['code']} without values"
        for v in a.get("values", []):
            check_json(v, VALUE)


def check_definition_xml(body: bytes) -> ET.Element:
    """The same for <service_definition>."""
    top = ET.fromstring(body)
    assert top.tag == "service_definition"
    check_xml_element(top, DEFINITION, {"attributes"})
    attrs = top.find("attributes")
    assert attrs is not None
    for a in attrs:
        assert a.tag == "attribute"
        check_xml_element(a, ATTRIBUTE, {"values"})
        for v in a.findall("values/value"):
            check_xml_element(v, VALUE)
    return top
