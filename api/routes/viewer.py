"""The web viewer: the single-page app in the top-level ``viewer/`` folder, served by the API.

``/``, ``/c/{comparison_id}`` and ``/b/{batch_id}`` answer the app's ``index.html`` (the page
reads the address itself); ``/viewer/{path}`` serves its static files (ES modules, CSS, SVG).
No API key is needed for these files: the page asks for one and calls the public ``/v1`` API
with it. Every answer carries a strict Content-Security-Policy (scripts and styles from this
origin only, no inline code, images from blob URLs the page made), and files are revalidated
by ETag on every load (``no-cache``) since their names carry no content hash.
"""

from __future__ import annotations

import hashlib
import uuid
from functools import lru_cache
from pathlib import Path
from typing import Final

from fastapi import APIRouter, Request, Response

from core.services.errors import NotFound

router = APIRouter(include_in_schema=False)

#: Folder of the viewer's files (``viewer/`` at the top of the checkout).
VIEWER_DIR: Final = Path(__file__).resolve().parents[2] / "viewer"

#: Media types of the files the viewer is made of; anything else is never served.
CONTENT_TYPES: Final = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
}

#: The page's policy: nothing inline, nothing from another origin, no framing.
CONTENT_SECURITY_POLICY: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)

#: Headers on every viewer answer.
SECURITY_HEADERS: Final = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
}


@lru_cache(maxsize=128)
def _read(path: Path, mtime_ns: int, size: int) -> tuple[bytes, str]:
    """The file's bytes and a strong ETag (keyed by modification time and size)."""
    data = path.read_bytes()
    return data, '"' + hashlib.sha256(data).hexdigest()[:32] + '"'


def _file_response(request: Request, relative: str) -> Response:
    """Serve ``viewer/<relative>`` with its content type, ETag, ``no-cache`` and the CSP."""
    root = VIEWER_DIR.resolve()
    path = (root / relative).resolve()
    content_type = CONTENT_TYPES.get(path.suffix.lower())
    if content_type is None or not path.is_relative_to(root) or not path.is_file():
        raise NotFound(f"no viewer file {relative!r}", code="not_found")
    stat = path.stat()
    data, etag = _read(path, stat.st_mtime_ns, stat.st_size)
    headers = {**SECURITY_HEADERS, "ETag": etag, "Cache-Control": "no-cache"}
    if etag in (tag.strip() for tag in request.headers.get("if-none-match", "").split(",")):
        return Response(status_code=304, headers=headers)
    return Response(data, media_type=content_type, headers=headers)


@router.get("/")
def viewer_home(request: Request) -> Response:
    """The viewer's compare page."""
    return _file_response(request, "index.html")


@router.get("/c/{comparison_id}")
def viewer_comparison(comparison_id: uuid.UUID, request: Request) -> Response:
    """A shareable address of one comparison's result (the page loads it with its key)."""
    return _file_response(request, "index.html")


@router.get("/b/{batch_id}")
def viewer_batch(batch_id: uuid.UUID, request: Request) -> Response:
    """A shareable address of one batch (the page loads it with its key)."""
    return _file_response(request, "index.html")


@router.get("/viewer/{path:path}")
def viewer_file(path: str, request: Request) -> Response:
    """One of the viewer's static files (modules, styles, icons)."""
    return _file_response(request, path)
