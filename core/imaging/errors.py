"""The one exception type the imaging pipeline raises, and its stable error codes."""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    """Stable, machine-readable reasons an image or a comparison was refused."""

    EMPTY_FILE = "empty_file"
    UNSUPPORTED_FORMAT = "unsupported_format"
    CORRUPT_IMAGE = "corrupt_image"
    IMAGE_TOO_LARGE = "image_too_large"
    SIZE_MISMATCH = "size_mismatch"
    ALIGNMENT_FAILED = "alignment_failed"
    INVALID_OPTIONS = "invalid_options"


class ImagingError(Exception):
    """Bad input to the pipeline: carries a stable ``code`` and a one-line ``message``.

    ``image`` names the offending input ("a" or "b") when the error is about one image.
    """

    def __init__(self, code: ErrorCode, message: str, *, image: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.image = image

    def __str__(self) -> str:
        prefix = f"image {self.image}: " if self.image else ""
        return f"{self.code.value}: {prefix}{self.message}"

    def with_image(self, image: str) -> ImagingError:
        """Return a copy of this error attributed to input ``image`` ("a" or "b")."""
        return ImagingError(self.code, self.message, image=image)
