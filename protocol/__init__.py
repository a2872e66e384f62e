"""FieldSync wire protocol: models, codec, error codes, cursor and checksum. Pure, no I/O.

Server and device code import from here, so these names are the contract.
"""

from .catalog import Catalog, CatalogLimits, CatalogServiceType
from .canonical import ScopeChecksum, canonical_bytes, scope_checksum, ticket_hash
from .codec import (
    DEFAULT_LIMITS,
    JSON,
    MSGPACK,
    Limits,
    decode,
    decode_live,
    encode,
    encode_error,
    negotiate,
    parse_media_type,
)
from .cursor import CursorSigner, CursorState
from .enums import (
    FIELD_DONE_STATUSES,
    HELD_STATUSES,
    OPEN_STATUSES,
    TERMINAL_STATUSES,
    WORKABLE_STATUSES,
    MutationStatus,
    PhotoKind,
    PhotoState,
    Priority,
    RemovalReason,
    TicketStatus,
)
from .errors import (
    DecodeError,
    ErrorBody,
    ErrorCode,
    ErrorEnvelope,
    ProtocolError,
    ReasonCode,
)
from .fields import WireModel, format_datetime
from .live import LiveEvent, LiveHello, LiveMessage, LivePoke, LiveRefetch
from .models import (
    Change,
    GeoPoint,
    ItemLine,
    Note,
    PhotoRef,
    PullRequest,
    PullResponse,
    Ticket,
    TicketRemoval,
    TicketUpsert,
)
from .push import (
    MAX_MUTATIONS,
    OPS,
    AcknowledgeArgs,
    AcknowledgeMutation,
    AddNoteArgs,
    AddNoteMutation,
    AttachPhotoArgs,
    AttachPhotoMutation,
    CompleteArgs,
    CompleteMutation,
    ConflictInfo,
    DeclineArgs,
    DeclineMutation,
    Mutation,
    MutationResult,
    PauseArgs,
    PauseMutation,
    PushRequest,
    PushResponse,
    ResumeArgs,
    ResumeMutation,
    SelfReportArgs,
    SelfReportMutation,
    SetItemsArgs,
    SetItemsMutation,
    SetResolutionArgs,
    SetResolutionMutation,
    StartArgs,
    StartMutation,
    UnableToCompleteArgs,
    UnableToCompleteMutation,
)
from .uploads import UploadMetadata, parse_tus_metadata
from .version import (
    MIN_SUPPORTED_VERSION,
    PROTOCOL_VERSION,
    VERSION_HEADER,
    check_version,
    reset_required,
    upgrade_required,
)

__all__ = [
    "DEFAULT_LIMITS", "FIELD_DONE_STATUSES", "HELD_STATUSES", "JSON", "MAX_MUTATIONS", "MIN_SUPPORTED_VERSION", "MSGPACK", "OPEN_STATUSES", "OPS",
    "PROTOCOL_VERSION", "TERMINAL_STATUSES", "VERSION_HEADER", "WORKABLE_STATUSES",
    "AcknowledgeArgs", "AcknowledgeMutation", "AddNoteArgs", "AddNoteMutation",
    "AttachPhotoArgs", "AttachPhotoMutation", "Catalog", "CatalogLimits", "CatalogServiceType", "Change", "CompleteArgs", "CompleteMutation",
    "ConflictInfo", "CursorSigner", "CursorState", "DeclineArgs", "DeclineMutation",
    "DecodeError", "ErrorBody", "ErrorCode", "ErrorEnvelope", "GeoPoint", "ItemLine",
    "Limits", "LiveEvent", "LiveHello", "LiveMessage", "LivePoke", "LiveRefetch",
    "Mutation", "MutationResult", "MutationStatus", "Note", "PauseArgs", "PauseMutation",
    "PhotoKind", "PhotoRef", "PhotoState", "Priority", "ProtocolError", "PullRequest",
    "PullResponse", "PushRequest", "PushResponse", "ReasonCode", "RemovalReason",
    "ResumeArgs", "ResumeMutation", "ScopeChecksum", "SelfReportArgs", "SelfReportMutation",
    "SetItemsArgs", "SetItemsMutation", "SetResolutionArgs", "SetResolutionMutation",
    "StartArgs", "StartMutation", "Ticket", "TicketRemoval", "TicketStatus", "TicketUpsert",
    "UnableToCompleteArgs", "UnableToCompleteMutation", "UploadMetadata", "WireModel",
    "canonical_bytes", "check_version", "decode", "decode_live", "encode", "encode_error",
    "format_datetime", "negotiate", "parse_media_type", "parse_tus_metadata",
    "reset_required", "scope_checksum", "ticket_hash", "upgrade_required",
]
