"""The catalogue a device reads before it works: which service types, codes, priorities and statuses exist, and the
server's limits, so a client never has to hard-code values the server refuses (GET /v1/catalog)."""

from __future__ import annotations

from .fields import Code64, PriorityField, RemovalReasonField, TicketStatusField, WireModel

__all__ = ["Catalog", "CatalogLimits", "CatalogServiceType"]


class CatalogServiceType(WireModel):
    """A service type of the caller's department and the codes a crew may close it with."""

    code: str
    name: str
    department: str
    default_priority: PriorityField
    resolution_codes: list[Code64]
    reason_codes: list[Code64]


class CatalogLimits(WireModel):
    """Server limits a client should respect before sending (larger requests are refused with a typed error)."""

    max_push_bytes: int
    max_body_bytes: int
    max_mutations_per_push: int
    max_item_lines: int
    max_pull_limit: int
    max_photo_bytes: int
    max_photo_pixels: int
    max_uploads_per_device: int
    retention_days: float


class Catalog(WireModel):
    """Everything enumerable a device needs: `complete`/`set_resolution`/`self_report` accept only a service type's
    `resolution_codes`, `unable_to_complete`/`decline` only its `reason_codes` (else `rejected`, `invalid_args`)."""

    department: str | None
    service_types: list[CatalogServiceType]
    priorities: list[PriorityField]
    statuses: list[TicketStatusField]
    removal_reasons: list[RemovalReasonField]
    limits: CatalogLimits
