"""Request and response models of the organisation API (departments, crews, service types, staff accounts).

Same strict wire base as the rest of the API, so unknown fields and wrong types are typed 422s and OpenAPI is
generated from these classes.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import ConfigDict, Field, StringConstraints

from protocol import WireModel
from protocol.fields import WireDatetime, WireUUID

Slug = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,62}$")]
CrewName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")]
Text255 = Annotated[str, StringConstraints(min_length=1, max_length=255)]
OutcomeCode = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_]{0,63}$")]
CodeList = Annotated[list[OutcomeCode], Field(min_length=1, max_length=100)]
PriorityName = Literal["low", "normal", "high", "urgent"]


# ---- departments ----------------------------------------------------------------------------------------------


class CreateDepartmentRequest(WireModel):
    """A department crews and service types belong to (e.g. sanitation)."""

    code: Slug = Field(description="Stable lowercase slug, e.g. 'sanitation'; used in every other request.")
    name: Text255 = Field(description="Display name, e.g. 'Sanitation'; unique.")
    agency_code: Annotated[str, StringConstraints(min_length=1, max_length=16)] | None = Field(
        default=None, description="MyLA311 owner code (e.g. 'BOS'), for imports.")


class DepartmentInfo(WireModel):
    """A department."""

    code: str
    name: str
    agency_code: str | None = None
    created_at: WireDatetime


class DepartmentList(WireModel):
    """Departments visible to the caller (an admin sees all, others their own)."""

    departments: list[DepartmentInfo]


# ---- crews ----------------------------------------------------------------------------------------------------


class CreateCrewRequest(WireModel):
    """A crew of one department; devices are enrolled to it and tickets assigned to it."""

    name: CrewName = Field(description="Unique short name devices and supervisors use, e.g. 'san-ev'.")
    display_name: Text255 | None = Field(default=None, description="Human name, e.g. 'Sanitation East Valley'.")
    department: Slug


class RetireCrewRequest(WireModel):
    """Retire a crew; with `to`, its open tickets move to that crew (same department) first."""

    to: CrewName | None = Field(default=None, description="Active crew of the same department to take the open tickets.")


class RetiredCrew(WireModel):
    """The retired crew and the tickets that moved (through the assignment path: audit, change log, removals)."""

    crew: str
    department: str
    active: Literal[False] = False
    moved_to: str | None = None
    moved: list[WireUUID] = Field(default_factory=list)


# ---- service types --------------------------------------------------------------------------------------------


class CreateServiceTypeRequest(WireModel):
    """A kind of request (e.g. Bulky Items) a department works, with the codes a crew may close it with."""

    code: Slug = Field(description="Open311 service_code, e.g. 'bulky_items'.")
    name: Text255 = Field(description="Display name and MyLA311 RequestType, e.g. 'Bulky Items'.")
    department: Slug
    default_priority: PriorityName = "normal"
    resolution_codes: CodeList | None = Field(
        default=None, description="Codes `complete`, `set_resolution` and `self_report` accept; omitted: the standard list.")
    reason_codes: CodeList | None = Field(
        default=None, description="Codes `unable_to_complete` and `decline` accept; omitted: the standard list.")


class ServiceTypeInfo(WireModel):
    """A service type with its allowed codes."""

    code: str
    name: str
    department: str
    default_priority: PriorityName
    resolution_codes: list[str]
    reason_codes: list[str]


class ServiceTypeList(WireModel):
    """Service types visible to the caller."""

    service_types: list[ServiceTypeInfo]


class ServiceTypeQuery(WireModel):
    """An admin may narrow the list to one department (others always see their own)."""

    model_config = ConfigDict(strict=False)

    department: Slug | None = None


# ---- staff accounts -------------------------------------------------------------------------------------------


class UserInfo(WireModel):
    """A supervisor or admin account; token hashes are never exposed."""

    name: str
    role: Literal["supervisor", "admin"]
    department: str | None = None
    created_at: WireDatetime
    disabled_at: WireDatetime | None = Field(default=None, description="Set once disabled; the token then answers 401 token_revoked.")


class UserList(WireModel):
    """Every staff account (admin only)."""

    users: list[UserInfo]


class RotatedToken(WireModel):
    """A user's new token, shown only in this response; the previous token stopped working."""

    name: str
    role: Literal["supervisor", "admin"]
    department: str | None = None
    token: str
