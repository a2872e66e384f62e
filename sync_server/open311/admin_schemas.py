"""Wire models of the Open311 admin API (API keys, dispatch rules, service types' Open311 face), strict like the rest."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from protocol import WireModel
from protocol.fields import WireDatetime
from sync_server.api.org_schemas import CrewName, OutcomeCode, Slug

KeyName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")]


class IssueApiKeyRequest(WireModel):
    """A key for one citizen app or channel; POST requests counts against its per-minute limit."""

    name: KeyName = Field(description="Who holds the key, e.g. 'citizen-app'.")
    rate_per_minute: int = Field(60, ge=1, le=100000, description="POST requests per minute, shared by all processes.")


class ApiKeyInfo(WireModel):
    """A key without its secret, with how many requests it created (its audit trail: GET /v1/tickets?source=open311)."""

    name: str
    rate_per_minute: int
    created_at: WireDatetime
    created_by: str
    revoked_at: WireDatetime | None
    created_requests: int


class IssuedApiKey(ApiKeyInfo):
    """The issued key, shown once."""

    api_key: str


class ApiKeyList(WireModel):
    """Every API key."""

    api_keys: list[ApiKeyInfo]


class CreateRuleRequest(WireModel):
    """Route requests of a service type (omitted: any) in one area (omitted: anywhere) to a crew of its department."""

    position: int = Field(100, ge=0, le=1_000_000, description="Rules are tried in ascending position, then id.")
    service_type: Slug | None = None
    council_district: int | None = Field(None, ge=0, le=9999)
    zip: Annotated[str, StringConstraints(pattern=r"^\d{5}$")] | None = None
    polygon: list[list[float]] | None = Field(None, description="[[lon, lat], ...] (3..1000 points).")
    routing_area: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = Field(
        None, description="The city's routing area code (MyLA311 AssignTo), matched by CSV imports.")
    crew: CrewName


class RuleInfo(WireModel):
    """A stored rule."""

    id: int
    position: int
    service_type: str | None
    area: Literal["anywhere", "district", "zip", "polygon", "routing_area"]
    council_district: int | None
    zip: str | None
    polygon: list[list[float]] | None
    routing_area: str | None
    crew: str
    created_by: str
    created_at: WireDatetime


class RuleList(WireModel):
    """Every rule in evaluation order."""

    rules: list[RuleInfo]


class ValueOption(WireModel):
    """One choice of a list attribute."""

    key: Annotated[str, StringConstraints(min_length=1, max_length=100)]
    name: Annotated[str, StringConstraints(min_length=1, max_length=255)]


class AttributeDef(WireModel):
    """One attribute of a service definition, as the GeoReport v2 spec's table defines it."""

    code: OutcomeCode
    datatype: Literal["string", "number", "datetime", "text", "singlevaluelist", "multivaluelist"]
    required: bool = False
    variable: bool = True
    description: Annotated[str, StringConstraints(min_length=1, max_length=1000)]
    datatype_description: Annotated[str, StringConstraints(max_length=255)] | None = None
    order: int = Field(1, ge=0, le=1000)
    values: list[ValueOption] = Field(default_factory=list, max_length=200)


class Open311ServiceConfig(WireModel):
    """How a service type appears to residents: description, group, keywords, attributes, public status notes."""

    description: Annotated[str, StringConstraints(max_length=2000)] | None = None
    group: Annotated[str, StringConstraints(max_length=255)] | None = None
    keywords: list[Annotated[str, StringConstraints(min_length=1, max_length=64)]] = Field(default_factory=list,
                                                                                           max_length=50)
    attributes: list[AttributeDef] = Field(default_factory=list, max_length=50)
    status_notes: dict[OutcomeCode, Annotated[str, StringConstraints(min_length=1, max_length=1000)]] | None = Field(
        None, description="Public text per resolution/reason code; omitted: keep the current texts.")


class Open311ServiceInfo(Open311ServiceConfig):
    """A service type's Open311 configuration as stored."""

    code: str


class Open311Intake(WireModel):
    """What a resident's app sent with a request, for staff only: contact data, media_url, attribute answers, key."""

    service_request_id: str
    api_key: str | None
    reporter: dict[str, str]
    media_url: str | None
    attributes: dict[str, list[str]]
    created_at: WireDatetime | None = Field(description="None: the ticket did not come in through Open311.")
