"""A comparison's options: ONE typed model, its defaults, its stored form, its engine mapping.

:class:`ComparisonOptions` is what a client may set (``POST /v1/comparisons``, batch items, the
multipart ``options`` field) and what is stored with a comparison (:meth:`~ComparisonOptions.
to_stored`); :func:`parse_options` validates a client's JSON object once (``InvalidRequest``,
HTTP 422, with a clear message), :func:`engine_options` maps stored options onto the engine's
``core.imaging.CompareOptions`` (which keeps its own checks for direct callers of the engine).
The defaults are the model's field defaults, and the tolerance's is the engine's own
(``core.imaging.options.DEFAULT_TOLERANCE``). The OpenAPI schema of the options is this
model's JSON schema.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Final, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    ValidationError,
    model_validator,
)

from core.config import LimitsSettings
from core.imaging import CompareOptions
from core.imaging.errors import ErrorCode, ImagingError
from core.imaging.options import DEFAULT_TOLERANCE
from core.services.errors import InvalidRequest

__all__ = [
    "MAX_COORDINATE",
    "MAX_IGNORE_RECTS",
    "OPTION_KEYS",
    "ComparisonOptions",
    "IgnoreRect",
    "Mode",
    "engine_options",
    "parse_options",
    "validate_options",
]

#: Most ignore rectangles in one comparison.
MAX_IGNORE_RECTS: Final = 1000
#: Largest absolute value of an ignore rectangle's coordinate or side, in pixels.
MAX_COORDINATE: Final = 10**9

Mode = Literal["auto", "pixel", "align"]
_Coordinate = Annotated[StrictInt, Field(ge=-MAX_COORDINATE, le=MAX_COORDINATE)]
_Side = Annotated[StrictInt, Field(ge=1, le=MAX_COORDINATE)]
#: ``[x, y, width, height]`` in image A's pixels (width and height >= 1).
IgnoreRect = tuple[_Coordinate, _Coordinate, _Side, _Side]


class ComparisonOptions(BaseModel):
    """Engine options of one comparison; every field is optional (null means its default)."""

    model_config = ConfigDict(extra="forbid", frozen=True, title="ComparisonOptions")

    mode: Mode = Field(
        default="auto",
        description="`pixel` never aligns (the sizes must match), `align` always aligns B onto "
        "A, `auto` compares directly and aligns only when the result looks like "
        "misregistration and a confident transform exists (pairs of different sizes are "
        "always aligned).",
    )
    ignore: tuple[IgnoreRect, ...] = Field(
        default=(),
        max_length=MAX_IGNORE_RECTS,
        description=f"Up to {MAX_IGNORE_RECTS} rectangles `[x, y, width, height]` of integers "
        "in image A's pixels (width and height >= 1, |values| <= 10^9), left out of every "
        "metric and drawn grey in the heatmap; parts outside the image are clipped.",
    )
    tolerance: float = Field(
        default=DEFAULT_TOLERANCE,
        ge=0.0,
        lt=1.0,
        strict=True,
        allow_inf_nan=False,
        description="Noise tolerance in [0, 1), a fraction of the data range: a pixel whose "
        "largest channel difference exceeds it counts as changed (the default 0.1 is 25.5 "
        "of 255 levels, as pixelmatch's and odiff's default threshold).",
    )
    antialiasing: StrictBool = Field(
        default=True,
        description="True: anti-aliasing and resampling noise is not counted as a change "
        "(counted in `antialiased_ratio` instead); false: every pixel over the tolerance "
        "counts.",
    )
    fail_under: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        strict=True,
        allow_inf_nan=False,
        description="SSIM threshold in [0, 1] for your pass/fail gate, stored and echoed; not "
        "used by the engine. Null: no gate.",
    )

    @model_validator(mode="before")
    @classmethod
    def _null_is_default(cls, data: Any) -> Any:
        """``null`` for an option that has a default means that default."""
        if isinstance(data, Mapping):
            return {k: v for k, v in data.items() if v is not None or k == "fail_under"}
        return data

    def to_stored(self) -> dict[str, Any]:
        """The JSON object stored with the comparison (and echoed in its resource).

        Returns
        -------
        dict
            ``{"mode": str, "ignore": [[x, y, w, h], ...], "tolerance": float,
            "antialiasing": bool, "fail_under": float | None}``, every key present.
        """
        return self.model_dump(mode="json")

    @classmethod
    def from_stored(cls, stored: Mapping[str, Any] | None) -> ComparisonOptions:
        """Read stored options back; keys stored before an option existed take its default.

        Raises
        ------
        InvalidRequest
            The stored object is not valid options (not written by this module).
        """
        return parse_options(dict(stored or {}))


#: The options a client may set.
OPTION_KEYS: Final = frozenset(ComparisonOptions.model_fields)


#: Pydantic error types of a rectangle that does not have four values.
_NOT_FOUR: Final = frozenset({"missing", "too_long", "tuple_type"})


def _where(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _message(exc: ValidationError) -> str:
    """One clear sentence per problem, joined: ``tolerance: Input should be less than 1``."""
    unknown = [
        str(e["loc"][0]) for e in exc.errors(include_url=False) if e["type"] == "extra_forbidden"
    ]
    parts: list[str] = []
    if unknown:
        parts.append(
            f"unknown option(s) {', '.join(map(repr, sorted(unknown)))}; "
            f"accepted: {', '.join(sorted(OPTION_KEYS))}"
        )
    for error in exc.errors(include_url=False):
        loc = tuple(error["loc"])
        if loc == ("ignore",) and error["type"] == "tuple_type":
            parts.append("ignore: a list of [x, y, width, height] rectangles is expected")
        elif loc[:1] == ("ignore",) and len(loc) >= 2 and error["type"] in _NOT_FOUR:
            parts.append(f"{_where(loc[:2])}: a rectangle is four integers [x, y, width, height]")
        elif error["type"] != "extra_forbidden":
            got = error.get("input")
            shown = (
                f", not {got!r}"
                if isinstance(got, str | int | float) and len(repr(got)) < 40
                else ""
            )
            parts.append(f"{_where(loc)}: {error['msg']}{shown}")
    return "; ".join(dict.fromkeys(parts))


def parse_options(options: Any) -> ComparisonOptions:
    """Validate a client's options object (JSON ``null`` or absent: every default).

    Parameters
    ----------
    options
        The decoded JSON value of ``options``: an object with the fields of
        :class:`ComparisonOptions`, or None.

    Returns
    -------
    ComparisonOptions
        The options, defaults filled in.

    Raises
    ------
    InvalidRequest
        Not an object, an unknown key, a value of the wrong type or out of range (HTTP 422
        ``invalid_request``; a batch item reports it as ``invalid_options``).
    """
    if options is None:
        return ComparisonOptions()
    if isinstance(options, ComparisonOptions):
        return options
    if not isinstance(options, Mapping):
        raise InvalidRequest("options must be a JSON object")
    try:
        return ComparisonOptions.model_validate(options)
    except ValidationError as exc:
        raise InvalidRequest(_message(exc)) from exc


def validate_options(options: Any) -> dict[str, Any]:
    """Validate a client's options and return their stored form (every key present).

    Same as ``parse_options(options).to_stored()``; ``InvalidRequest`` when invalid.
    """
    return parse_options(options).to_stored()


def engine_options(
    options: ComparisonOptions | Mapping[str, Any] | None, limits: LimitsSettings | None = None
) -> CompareOptions:
    """Map options (the model, or their stored form) onto ``core.imaging.CompareOptions``.

    ``fail_under`` is the client's gate and not an engine option; no preview is rendered
    (the service serves the full heatmap only). The engine's decoding limits are the ones the
    API accepted the images under (``limits``; default: the settings' defaults).

    Raises
    ------
    ImagingError
        ``invalid_options``: stored options that are not valid (the job fails with that code).
    """
    try:
        model = parse_options(options)
    except InvalidRequest as exc:
        raise ImagingError(ErrorCode.INVALID_OPTIONS, exc.message) from exc
    limits = limits or LimitsSettings()
    return CompareOptions(
        mode=model.mode,
        ignore=model.ignore,
        tolerance=model.tolerance,
        antialiasing=model.antialiasing,
        max_pixels=limits.max_pixels,
        max_bytes=limits.max_upload_bytes,
        preview_max_side=None,
        max_job_bytes=limits.job_memory_bytes,
    )
