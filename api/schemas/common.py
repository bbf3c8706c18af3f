"""What every v1 body shares: the base models, the problem document, pages, the options object.

Responses are built from the database rows with the ``from_*`` constructors of each resource's
module; links are absolute URLs on ``settings.api.public_base_url``.
"""

from __future__ import annotations

from typing import Annotated, Any, Generic, TypeVar
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, core_schema

from core.services.options import ComparisonOptions

__all__ = [
    "METADATA_DESCRIPTION",
    "OPTIONS_DESCRIPTION",
    "ErrorInfo",
    "InModel",
    "OptionsIn",
    "OutModel",
    "Page",
    "Problem",
    "check_http_url",
]

OPTIONS_DESCRIPTION = (
    "Engine options (every field optional; see `ComparisonOptions`). Validated by the service: "
    "422 `invalid_request` for a comparison, an `invalid_options` item error in a batch."
)
METADATA_DESCRIPTION = "Your own JSON object (a reference, a build number), echoed back as is."


def check_http_url(value: str | None) -> str | None:
    """Accept an absolute http(s) URL of at most :data:`MAX_URL_LENGTH` characters."""
    if value is None:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("must be an absolute http(s) URL")
    return value


class _OptionsObject:
    """Request ``options``: any JSON object here, documented as :class:`ComparisonOptions`.

    The service validates it with that model (``core.services.options.parse_options``): a
    bad comparison is refused with 422 ``invalid_request``, a bad batch item gets its own
    ``invalid_options`` error without sinking the batch.
    """

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        return core_schema.dict_schema(core_schema.str_schema(), core_schema.any_schema())

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return handler(ComparisonOptions.__pydantic_core_schema__)


#: A request's ``options`` object (documented by the model, validated by the service).
OptionsIn = Annotated[dict[str, Any], _OptionsObject]


class OutModel(BaseModel):
    """A response body (fields may be filled by alias, such as ``self``)."""

    model_config = ConfigDict(populate_by_name=True)


class InModel(BaseModel):
    """A request body: unknown fields are refused (422)."""

    model_config = ConfigDict(extra="forbid")


# -- errors -----------------------------------------------------------------------------------


class Problem(BaseModel):
    """An RFC 9457 problem document (``application/problem+json``)."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(description="URI of the problem type: `<base>/problems/<code>`.")
    title: str = Field(description="Short summary of the problem type.")
    status: int = Field(description="HTTP status code.")
    detail: str = Field(description="What went wrong this time, in one sentence.")
    code: str = Field(description="Stable machine-readable code (see `GET /problems`).")
    instance: str = Field(description="The request path.")
    request_id: str | None = Field(default=None, description="Id of the request (logs).")


class ErrorInfo(OutModel):
    """Why a comparison failed: a stable code and a message."""

    code: str
    message: str


T = TypeVar("T")


class Page(OutModel, Generic[T]):
    """One page of a listing, newest first; pass ``next_cursor`` as ``cursor`` for the next."""

    items: list[T]
    next_cursor: str | None = Field(description="Null on the last page.")
