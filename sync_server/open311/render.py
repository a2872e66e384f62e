"""GeoReport v2 bodies in both formats from one list of plain records, so JSON and XML can never disagree.

XML is built with xml.etree.ElementTree (never by string concatenation), so residents' text is always escaped.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

JSON = "json"
XML = "xml"
FORMATS = (JSON, XML)
MEDIA = {JSON: "application/json", XML: "text/xml"}

# List-valued fields and the element each of their items becomes in XML (the spec's examples).
_XML_ITEM = {"attributes": "attribute", "values": "value", "notes": "note", "photos": "photo", "errors": "error"}


class Open311Error(Exception):
    """A client error the spec's error body describes: the HTTP status is also the `code` (400, 403, 404, 429)."""

    def __init__(self, status: int, description: str, retry_after: int | None = None) -> None:
        super().__init__(description)
        self.status = status
        self.description = description
        self.retry_after = retry_after


def w3c(ts: datetime | None) -> str | None:
    """W3C datetime (ISO 8601 with offset) in UTC, seconds precision: what the spec's examples use."""
    if ts is None:
        return None
    return ts.astimezone(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _plain(value: Any) -> Any:
    """JSON-ready value: datetimes as W3C strings."""
    if isinstance(value, datetime):
        return w3c(value)
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


# Characters XML 1.0 cannot carry at all (not even as references): C0 controls but tab/LF/CR, U+FFFE/U+FFFF and lone
# surrogates. ElementTree writes them as they are, so one resident's "\x01" would make the whole listing unparsable.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")


def _text(value: Any) -> str | None:
    """XML text of a scalar: booleans as the spec's true/false, nothing for null, XML-illegal characters as U+FFFD."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return w3c(value)
    return _NOT_XML.sub("\ufffd", str(value))


def _fill(parent: ET.Element, tag: str, value: Any) -> None:
    """Append `value` under `parent` as element `tag` (lists and mappings recursively)."""
    el = ET.SubElement(parent, tag)
    if isinstance(value, Mapping):
        for k, v in value.items():
            _fill(el, k, v)
    elif isinstance(value, (list, tuple)):
        item = _XML_ITEM.get(tag, "item")
        for v in value:
            _fill(el, item, v)
    else:
        el.text = _text(value)


def to_xml(root: str, item: str | None, records: Sequence[Mapping[str, Any]] | Mapping[str, Any]) -> bytes:
    """`<root><item>…</item>…</root>` for a list, or `<root>fields</root>` for one record (service_definition)."""
    top = ET.Element(root)
    if isinstance(records, Mapping):
        for k, v in records.items():
            _fill(top, k, v)
    else:
        assert item is not None
        for rec in records:
            _fill(top, item, rec)
    body: bytes = ET.tostring(top, encoding="utf-8", xml_declaration=True)
    return body


def to_json(records: Sequence[Mapping[str, Any]] | Mapping[str, Any]) -> bytes:
    """The JSON form: the same records, UTF-8, not ASCII-escaped."""
    return json.dumps(_plain(records), ensure_ascii=False, separators=(",", ":")).encode()


def render(fmt: str, root: str, item: str | None, records: Sequence[Mapping[str, Any]] | Mapping[str, Any]) -> bytes:
    """One body in the requested format."""
    return to_json(records) if fmt == JSON else to_xml(root, item, records)


def format_of_path(path: str) -> str:
    """The format a GeoReport path names by its extension; anything else is XML, the spec's mandatory format."""
    return JSON if path.endswith(".json") else XML


def error_body(fmt: str, err: Open311Error) -> bytes:
    """The spec's error list: `[{code, description}]`, or `<errors><error>…</error></errors>`."""
    return render(fmt, "errors", "error", [{"code": err.status, "description": err.description}])
