"""The viewer's previews of a comparison: rendered on first view, then kept next to the heatmap.

Full-resolution previews
    Two PNGs on A's pixel grid (see ``core.imaging.previews``): ``previews/<id>/a.png`` (A as
    decoded) and ``previews/<id>/b.png`` (B warped into A's frame by the applied alignment,
    else B as decoded), for images up to :data:`PREVIEW_MAX_PIXELS`.

Pyramids (big images)
    For A, B-in-A's-frame and the heatmap, a tile pyramid (``core.imaging.pyramid``): a
    downscaled preview whose longest side is at most ``max_side`` (``api.preview_max_side``,
    2048 px by default) and 512 px full-resolution tiles of every level below it, under
    ``previews/<id>/pyramid-<max_side>-<tile>/<name>/`` (``<level>.png`` for the preview,
    ``<level>/<column>_<row>.png`` for tiles), listed in ``previews/<id>/pyramid.json`` so that
    deleting the comparison deletes them. The heatmap is reduced by block maxima, so a small
    edit stays red in the preview. The whole pyramid of the three images is rendered at once,
    under the comparison's lock and a process-wide semaphore (one big decode per API process
    at a time, so memory does not grow with concurrent requests); every later request for a
    level or tile is a storage read.

When they are rendered
    On the first request, by the API, not by the worker. Measured with ``bench/bench_viewer.py``
    (2 shared cores): the full-resolution previews cost 0.6x the comparison itself at 1080p and
    4K (1.4x in an earlier run); for a 37 MP pair (7200 x 5120) the three downscaled previews
    cost 0.18x of its comparison and previews plus every tile 0.45x. Most results of a
    high-volume batch are never opened: rendering in the worker would add up to 0.45x to every
    big comparison to save one wait on the few that are. So the first request for a preview
    renders the three previews alone (the first paint), and the tiles follow in a background
    thread that keeps the comparison's lock; a tile asked for meanwhile waits for them.
"""

from __future__ import annotations

import json
import math
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, Final, Literal

import sqlalchemy as sa
import structlog
from sqlalchemy.orm import Session, aliased

from core.config import LimitsSettings
from core.db.models import Comparison, ComparisonState, Image
from core.imaging import ErrorCode, ImagingError
from core.imaging.legend import with_legend
from core.imaging.previews import a_pixels, b_in_a_frame, render_previews
from core.imaging.pyramid import (
    TILE_SIZE,
    PyramidLayout,
    PyramidPiece,
    heatmap_pyramid,
    pixel_pyramid,
    read_heatmap_indices,
)
from core.services._common import map_db_errors, map_storage_errors
from core.services.errors import InvalidRequest, NotFound
from core.storage import ObjectNotFound, ObjectStore

__all__ = [
    "PREVIEW_MAX_PIXELS",
    "PREVIEW_NAMES",
    "PREVIEW_NOT_AVAILABLE",
    "PYRAMID_NAMES",
    "delete_previews",
    "get_preview",
    "get_pyramid_piece",
    "heatmap_with_legend",
    "preview_key",
    "preview_manifest",
    "pyramid_key",
]

log = structlog.get_logger(__name__)

PreviewName = Literal["a", "b", "heatmap"]
#: The rendered previews of one comparison (the heatmap is the worker's).
PREVIEW_NAMES: Final[tuple[Literal["a", "b"], ...]] = ("a", "b")
#: Error code of a preview that does not exist (not succeeded, or too large to render).
PREVIEW_NOT_AVAILABLE: Final = "preview_not_available"
#: Largest image A (width x height, pixels) whose previews are rendered on request: two 8K
#: frames. Above it the viewer shows the heatmap alone.
PREVIEW_MAX_PIXELS: Final = 2 * 7680 * 4320
#: The images that have a pyramid, in rendering order.
PYRAMID_NAMES: Final[tuple[PreviewName, ...]] = ("a", "b", "heatmap")
#: Concurrent uploads of pyramid pieces to storage (S3 round trips overlap the encoding).
_PUT_THREADS = 4

_locks_guard = threading.Lock()
#: One pyramid rendering per process at a time: it holds a big image decoded (about
#: width x height x 4 bytes per image, one image at a time), so memory stays bounded however
#: many comparisons are opened at once.
_pyramid_renders = threading.BoundedSemaphore(1)
_locks: dict[uuid.UUID, threading.Lock] = {}


def preview_key(comparison_id: uuid.UUID, name: Literal["a", "b"]) -> str:
    """Storage key of one rendered preview (deterministic)."""
    return f"previews/{comparison_id}/{name}.png"


def _not_available(comparison_id: uuid.UUID, why: str) -> NotFound:
    return NotFound(f"comparison {comparison_id} has no preview: {why}", code=PREVIEW_NOT_AVAILABLE)


def _lock(comparison_id: uuid.UUID) -> threading.Lock:
    with _locks_guard:
        if len(_locks) > 1024:  # forget idle locks
            for key in [k for k, v in _locks.items() if not v.locked()]:
                del _locks[key]
        return _locks.setdefault(comparison_id, threading.Lock())


def get_preview(
    session: Session,
    store: ObjectStore,
    *,
    tenant_id: uuid.UUID,
    comparison_id: uuid.UUID,
    name: PreviewName,
    limits: LimitsSettings | None = None,
) -> bytes:
    """One preview PNG of a ``succeeded`` comparison of the tenant, rendered if not stored yet.

    Parameters
    ----------
    session
        A session; its transaction is committed before storage is read (none is held while
        rendering).
    store
        The object store holding the images and the heatmap.
    tenant_id, comparison_id
        Whose comparison; another tenant's is not found.
    name
        ``"a"``, ``"b"`` (B in A's frame) or ``"heatmap"``.
    limits
        Decoding limits (default: the settings' defaults).

    Raises
    ------
    NotFound
        ``not_found`` (no such comparison for the tenant) or ``preview_not_available`` (not
        succeeded, A over :data:`PREVIEW_MAX_PIXELS`, or the images are gone).
    Unavailable
        The database or storage is unavailable.
    """
    row, key_a, key_b = _load(session, tenant_id, comparison_id)
    if name == "heatmap":
        if row.heatmap_key is None:
            raise _not_available(comparison_id, "no heatmap")
        return _read(store, row.heatmap_key, comparison_id)
    key = preview_key(comparison_id, name)
    with _lock(comparison_id):  # one rendering per comparison at a time in this process
        with map_storage_errors("read preview"):
            try:
                return store.get(key)
            except ObjectNotFound:
                pass
        result = row.result or {}
        if int(result.get("width", 0)) * int(result.get("height", 0)) > PREVIEW_MAX_PIXELS:
            raise _not_available(comparison_id, "image A is too large to preview")
        rendered = _render(store, comparison_id, key_a, key_b, result, limits)
    return rendered[name]


def heatmap_with_legend(
    session: Session,
    *,
    tenant_id: uuid.UUID,
    comparison_id: uuid.UUID,
    name: PreviewName,
    png: Callable[[], bytes],
) -> bytes:
    """The PNG that ``png()`` reads (the comparison's heatmap, or its downscaled preview) with
    the legend drawn under it: the colour bar with the comparison's own tolerance marked, and
    the anti-aliasing and not-compared colours in words (``core.imaging.legend.with_legend``).
    ``name`` is checked first: nothing is read or rendered for a request that is refused.

    Raises
    ------
    InvalidRequest
        ``name`` is not ``"heatmap"`` (A and B have no colour scale), or the full-resolution
        heatmap is over ``LEGEND_MAX_PIXELS`` (its downscaled preview takes a legend).
    NotFound
        As :func:`get_preview`.
    """
    if name != "heatmap":
        raise InvalidRequest("the legend is drawn on the heatmap only (name=heatmap)")
    data = png()
    row, _, _ = _load(session, tenant_id, comparison_id)
    tolerance = float((row.result or {}).get("tolerance") or 0.0)
    antialiasing = bool((row.options or {}).get("antialiasing", True))
    try:
        return with_legend(data, tolerance, antialiasing=antialiasing)
    except ImagingError as exc:
        if exc.code == ErrorCode.IMAGE_TOO_LARGE:
            raise InvalidRequest(
                "the heatmap is too large to draw a legend on: ask for its downscaled preview "
                "(level = the manifest's preview_level) with legend=true"
            ) from exc
        raise _not_available(comparison_id, f"its heatmap cannot be read ({exc})") from exc


def _load(
    session: Session, tenant_id: uuid.UUID, comparison_id: uuid.UUID
) -> tuple[Comparison, str, str]:
    """The tenant's ``succeeded`` comparison and the storage keys of A and B."""
    with map_db_errors("read comparison"):
        image_a, image_b = aliased(Image), aliased(Image)
        found = session.execute(
            sa.select(Comparison, image_a.storage_key, image_b.storage_key)
            .join(image_a, image_a.id == Comparison.image_a_id)
            .join(image_b, image_b.id == Comparison.image_b_id)
            .where(Comparison.tenant_id == tenant_id, Comparison.id == comparison_id)
        ).one_or_none()
        session.commit()
    if found is None:
        raise NotFound(f"comparison {comparison_id} not found")
    row, key_a, key_b = found
    if row.state != ComparisonState.SUCCEEDED or not row.result:
        raise _not_available(comparison_id, f"state {row.state}")
    return row, key_a, key_b


def _read(store: ObjectStore, key: str, comparison_id: uuid.UUID) -> bytes:
    with map_storage_errors("read preview"):
        try:
            return store.get(key)
        except ObjectNotFound:
            raise _not_available(comparison_id, "its stored object is gone") from None


def _render(
    store: ObjectStore,
    comparison_id: uuid.UUID,
    key_a: str,
    key_b: str,
    result: dict[str, Any],
    limits: LimitsSettings | None,
) -> dict[str, bytes]:
    limits = limits or LimitsSettings()
    data_a, data_b = _read(store, key_a, comparison_id), _read(store, key_b, comparison_id)
    homography = _homography(result)
    try:
        previews = render_previews(
            data_a,
            data_b,
            homography,
            max_bytes=limits.max_upload_bytes,
            max_pixels=limits.max_pixels,
        )
    except (ImagingError, ValueError) as exc:
        log.warning("comparison.preview_failed", comparison_id=str(comparison_id), error=str(exc))
        raise _not_available(comparison_id, "it cannot be rendered") from exc
    rendered = {"a": previews.a_png, "b": previews.b_png}
    with map_storage_errors("write previews"):
        for name in PREVIEW_NAMES:
            store.put(preview_key(comparison_id, name), rendered[name], content_type="image/png")
    return rendered


def _homography(result: dict[str, Any]) -> Any:
    alignment = result.get("alignment")
    if isinstance(alignment, dict) and alignment.get("applied"):
        return alignment.get("homography")
    return None


# -- pyramids ----------------------------------------------------------------------------------


def _layout(row: Comparison, max_side: int) -> PyramidLayout:
    result = row.result or {}
    return PyramidLayout(int(result["width"]), int(result["height"]), max_side, TILE_SIZE)


def _prefix(comparison_id: uuid.UUID, layout: PyramidLayout) -> str:
    return f"previews/{comparison_id}/pyramid-{layout.max_side}-{layout.tile_size}"


def _manifest_key(comparison_id: uuid.UUID) -> str:
    return f"previews/{comparison_id}/pyramid.json"


def pyramid_key(
    comparison_id: uuid.UUID,
    layout: PyramidLayout,
    name: str,
    level: int,
    tile: tuple[int, int] | None = None,
) -> str:
    """Storage key of a pyramid's preview (``tile`` None: the top level, whole) or of tile
    ``(column, row)`` of ``level`` (deterministic)."""
    base = f"{_prefix(comparison_id, layout)}/{name}/{level}"
    return f"{base}.png" if tile is None else f"{base}/{tile[0]}_{tile[1]}.png"


def _pyramid_keys(comparison_id: uuid.UUID, layout: PyramidLayout) -> Iterator[str]:
    for name in PYRAMID_NAMES:
        yield pyramid_key(comparison_id, layout, name, layout.top_level)
        for level, column, row in layout.tiles():
            yield pyramid_key(comparison_id, layout, name, level, (column, row))


def preview_manifest(
    session: Session,
    *,
    tenant_id: uuid.UUID,
    comparison_id: uuid.UUID,
    max_side: int,
    tiled_above_pixels: int,
) -> dict[str, Any]:
    """What the viewer needs to show a comparison's images (nothing is rendered).

    Returns
    -------
    dict
        ``width``, ``height`` (A's pixels); ``tiled`` (A has more than ``tiled_above_pixels``
        pixels: show the downscaled previews and full-resolution tiles, not the full PNGs);
        ``max_side``, ``tile_size`` (pixels); ``preview_level`` (the top level, whose whole
        image is the downscaled preview); ``levels``: ``{level, width, height, columns, rows}``
        from full resolution (0) to the preview (``columns == rows == 0``: not tiled).

    Raises
    ------
    NotFound
        ``not_found`` or ``preview_not_available`` (not succeeded).
    Unavailable
        The database is unavailable.
    """
    row, _, _ = _load(session, tenant_id, comparison_id)
    layout = _layout(row, max_side)
    return {
        "width": layout.width,
        "height": layout.height,
        "tiled": layout.width * layout.height > tiled_above_pixels,
        "max_side": layout.max_side,
        "tile_size": layout.tile_size,
        "preview_level": layout.top_level,
        "levels": layout.describe(),
    }


def get_pyramid_piece(
    session: Session,
    store: ObjectStore,
    *,
    tenant_id: uuid.UUID,
    comparison_id: uuid.UUID,
    name: str,
    level: int,
    tile: tuple[int, int] | None = None,
    max_side: int,
    limits: LimitsSettings | None = None,
) -> bytes:
    """A PNG of a comparison's pyramid: the downscaled preview (``tile`` None; ``level`` must
    be the top level) or full-resolution tile ``(column, row)`` of ``level`` (0: A's pixels).

    Parameters
    ----------
    name
        ``"a"``, ``"b"`` (B in A's frame) or ``"heatmap"``.
    level, tile
        As listed by :func:`preview_manifest`.
    max_side
        Longest side of the downscaled preview, in pixels (``api.preview_max_side``).

    Raises
    ------
    NotFound
        ``not_found`` (no such comparison for the tenant) or ``preview_not_available`` (not
        succeeded, no such name, level or tile, or the images cannot be rendered).
    Unavailable
        The database or storage is unavailable.
    """
    row, key_a, key_b = _load(session, tenant_id, comparison_id)
    layout = _layout(row, max_side)
    if name not in PYRAMID_NAMES:
        raise _not_available(comparison_id, f"no image named {name!r} (a, b or heatmap)")
    if tile is None and level != layout.top_level:
        raise _not_available(
            comparison_id, f"level {level} is not the preview's (level {layout.top_level})"
        )
    if tile is not None and not layout.has_tile(level, *tile):
        raise _not_available(comparison_id, f"no tile {tile[0]}_{tile[1]} at level {level}")
    if name == "heatmap" and row.heatmap_key is None:
        raise _not_available(comparison_id, "no heatmap")
    key = pyramid_key(comparison_id, layout, name, level, tile)
    lock = _lock(comparison_id)  # one rendering per comparison at a time in this process
    lock.acquire()
    handed_over = False
    try:
        with map_storage_errors("read preview"):
            try:
                return store.get(key)
            except ObjectNotFound:
                pass
        limits = limits or LimitsSettings()
        with _pyramid_renders:
            # A preview is asked first (the viewer's first paint): render the three previews
            # alone, answer, and render the tiles in the background still holding the lock, so
            # a tile request waits for them rather than rendering them a second time.
            _render_pyramid(store, row, key_a, key_b, layout, limits, tiles=tile is not None)
        if tile is None:
            threading.Thread(
                target=_render_tiles_then_release,
                args=(lock, store, row, key_a, key_b, layout, limits),
                name=f"pyramid-{comparison_id}",
                daemon=True,
            ).start()
            handed_over = True
    finally:
        if not handed_over:
            lock.release()
    return _read(store, key, comparison_id)


def _render_tiles_then_release(
    lock: threading.Lock,
    store: ObjectStore,
    row: Comparison,
    key_a: str,
    key_b: str,
    layout: PyramidLayout,
    limits: LimitsSettings,
) -> None:
    """The background half of a first view: every tile, then release the comparison's lock
    (a failure is logged; the next tile request renders them again)."""
    try:
        with _pyramid_renders:
            _render_pyramid(store, row, key_a, key_b, layout, limits, tiles=True, previews=False)
    except Exception:  # a thread has no caller to raise to
        log.exception("comparison.pyramid_tiles_failed", comparison_id=str(row.id))
    finally:
        lock.release()


def _render_pyramid(
    store: ObjectStore,
    row: Comparison,
    key_a: str,
    key_b: str,
    layout: PyramidLayout,
    limits: LimitsSettings,
    *,
    tiles: bool,
    previews: bool = True,
) -> None:
    """Render and store the pyramids of A, B in A's frame and the heatmap, one image at a time:
    their previews (``previews``) and their tiles (``tiles``)."""
    comparison_id = row.id
    decoding = {"max_bytes": limits.max_upload_bytes, "max_pixels": limits.max_pixels}
    size = (layout.height, layout.width)
    _forget_pyramid(store, comparison_id, keep=layout)  # one made with other settings, if any
    manifest = {
        "width": layout.width,
        "height": layout.height,
        "max_side": layout.max_side,
        "tile_size": layout.tile_size,
    }
    with map_storage_errors("write previews"):  # first: a half-rendered pyramid is deletable
        store.put(
            _manifest_key(comparison_id),
            json.dumps(manifest).encode(),
            content_type="application/json",
        )
    try:
        pixels = a_pixels(_read(store, key_a, comparison_id), **decoding)
        pieces = pixel_pyramid(pixels, layout, tiles=tiles)
        _store_pieces(store, comparison_id, layout, "a", pieces, previews=previews)
        del pixels
        homography = _homography(row.result or {})
        pixels = b_in_a_frame(_read(store, key_b, comparison_id), homography, size, **decoding)
        pieces = pixel_pyramid(pixels, layout, tiles=tiles)
        _store_pieces(store, comparison_id, layout, "b", pieces, previews=previews)
        del pixels
        if row.heatmap_key is not None:
            heat = _read(store, row.heatmap_key, comparison_id)
            indices = read_heatmap_indices(heat, max_pixels=limits.max_pixels)
            del heat
            tolerance = float((row.result or {}).get("tolerance") or 0.0)
            pieces = heatmap_pyramid(
                indices, layout, tiles=tiles, tolerance_level=math.floor(tolerance * 255)
            )
            _store_pieces(store, comparison_id, layout, "heatmap", pieces, previews=previews)
    except (ImagingError, ValueError) as exc:
        log.warning("comparison.pyramid_failed", comparison_id=str(comparison_id), error=str(exc))
        raise _not_available(comparison_id, "it cannot be rendered") from exc
    log.info(
        "comparison.pyramid_rendered",
        comparison_id=str(comparison_id),
        levels=layout.top_level + 1,
    )


def _store_pieces(
    store: ObjectStore,
    comparison_id: uuid.UUID,
    layout: PyramidLayout,
    name: str,
    pieces: Iterable[PyramidPiece],
    *,
    previews: bool = True,
) -> None:
    """Encode and write pieces on a few threads (PNG encoders and uploads overlap), a bounded
    number in flight; the preview is skipped unless ``previews``."""
    pending: list[Future[None]] = []

    def put(key: str, piece: PyramidPiece) -> None:
        store.put(key, piece.png, content_type="image/png")

    with map_storage_errors("write previews"), ThreadPoolExecutor(_PUT_THREADS) as pool:
        for piece in pieces:
            if piece.is_preview and not previews:
                continue
            tile = None if piece.is_preview else (piece.column, piece.row)
            key = pyramid_key(comparison_id, layout, name, piece.level, tile)
            pending.append(pool.submit(put, key, piece))
            if len(pending) >= 2 * _PUT_THREADS:
                pending.pop(0).result()
        for future in pending:
            future.result()


def _forget_pyramid(
    store: ObjectStore, comparison_id: uuid.UUID, *, keep: PyramidLayout | None = None
) -> None:
    """Delete the pyramid listed in the comparison's ``pyramid.json`` (if any, and unless its
    layout is ``keep``), then that."""
    with map_storage_errors("delete previews"):
        try:
            stored = json.loads(store.get(_manifest_key(comparison_id)))
        except ObjectNotFound:
            return
        except ValueError:
            stored = None
        if isinstance(stored, dict):
            try:
                layout = PyramidLayout(
                    int(stored["width"]),
                    int(stored["height"]),
                    int(stored["max_side"]),
                    int(stored["tile_size"]),
                )
            except (KeyError, TypeError, ValueError, ImagingError):
                layout = None
            if layout is not None and layout == keep:
                return
            if layout is not None:
                with _deleting(store) as delete:
                    for key in _pyramid_keys(comparison_id, layout):
                        delete(key)
        store.delete(_manifest_key(comparison_id))


@contextmanager
def _deleting(store: ObjectStore) -> Iterator[Any]:
    """A ``delete(key)`` that runs a few deletions at once, all done when the block ends."""
    with ThreadPoolExecutor(_PUT_THREADS) as pool:
        futures: list[Future[None]] = []
        yield lambda key: futures.append(pool.submit(store.delete, key))
        for future in futures:
            future.result()


def delete_previews(store: ObjectStore, comparison_id: uuid.UUID) -> None:
    """Delete a comparison's rendered previews and pyramid (missing ones are fine).

    Raises
    ------
    Unavailable
        Storage is unavailable.
    """
    with map_storage_errors("delete previews"):
        for name in PREVIEW_NAMES:
            store.delete(preview_key(comparison_id, name))
    _forget_pyramid(store, comparison_id)
