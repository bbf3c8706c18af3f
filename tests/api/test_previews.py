"""``/v1/comparisons/{id}/previews``: the manifest, downscaled previews and full-resolution
tiles of a real comparison (the engine's result and heatmap, stored as the worker does)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import cv2
import numpy as np
import sqlalchemy as sa

from core.db.models import Comparison, ComparisonState, Tenant, utcnow
from core.imaging import CompareOptions, compare
from core.imaging.heatmap import heatmap_palette
from core.imaging.legend import STRIP_HEIGHT, STRIP_MIN_WIDTH
from core.imaging.pyramid import PyramidLayout, read_heatmap_indices
from core.services import previews
from core.services.comparisons import HEATMAP_KEY
from tests.support.api import Api, ApiFactory, assert_problem, s3_storage
from tests.support.images import decode_rgb, photo, png

RED = (255, 0, 0)
WIDTH, HEIGHT = 2100, 700  # over the default 2048 px: one level above full resolution
EDIT = (1500, 300)  # x, y of the 4x4 repainted patch


def _pair() -> tuple[np.ndarray, np.ndarray]:
    a = photo(WIDTH, HEIGHT, seed=11)
    b = a.copy()
    x, y = EDIT
    b[y : y + 4, x : x + 4] = 255 - b[y : y + 4, x : x + 4]
    return a, b


def _succeeded(api: Api, a: np.ndarray, b: np.ndarray, tenant: str = "acme") -> str:
    """Upload, submit, and finish the comparison with the engine's real result and heatmap."""
    da, db = png(a), png(b)
    job = api.compare(api.upload(da, tenant)["id"], api.upload(db, tenant)["id"], tenant)
    result = compare(da, db, CompareOptions(mode="pixel", preview_max_side=None))
    key = HEATMAP_KEY.format(comparison_id=job["id"])
    api.app.state.store.put(key, result.heatmap_png, content_type="image/png")
    now = utcnow()
    with api.sessions() as session, session.begin():
        session.execute(
            sa.update(Comparison)
            .where(Comparison.id == uuid.UUID(job["id"]))
            .values(
                state=ComparisonState.SUCCEEDED,
                attempt=1,
                result=result.to_dict(),
                heatmap_key=key,
                started_at=now,
                finished_at=now,
                updated_at=now,
            )
        )
    return str(job["id"])


def _tenant_id(api: Api, name: str = "acme") -> uuid.UUID:
    with api.sessions() as session:
        return session.execute(sa.select(Tenant.id).where(Tenant.name == name)).scalar_one()


def _get(api: Api, path: str, tenant: str = "acme") -> Any:
    return api.client.get(path, headers=api.auth(tenant))


def test_manifest_preview_and_tiles_of_a_real_pair(sqlite_api: Api) -> None:
    api = sqlite_api
    a, b = _pair()
    cid = _succeeded(api, a, b)
    base = f"/v1/comparisons/{cid}/previews"
    manifest = _get(api, base)
    assert manifest.status_code == 200, manifest.text
    body = manifest.json()
    assert body["width"] == WIDTH and body["height"] == HEIGHT
    assert body["tiled"] is False  # 1.5 MP: the viewer uses the full PNGs
    assert (body["max_side"], body["tile_size"], body["preview_level"]) == (2048, 512, 1)
    assert body["levels"] == [
        {"level": 0, "width": 2100, "height": 700, "columns": 5, "rows": 2},
        {"level": 1, "width": 1050, "height": 350, "columns": 0, "rows": 0},
    ]

    # The downscaled previews: longest side <= 2048, the edit red in the heatmap's.
    shown = {}
    for name in ("a", "b", "heatmap"):
        response = _get(api, f"{base}/{name}?level=1")
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "image/png"
        assert "private" in response.headers["cache-control"]
        shown[name] = response.content
    assert decode_rgb(shown["a"]).shape == (350, 1050, 3)
    expected_a = cv2.resize(a, (1050, 350), interpolation=cv2.INTER_AREA)
    assert np.abs(decode_rgb(shown["a"]).astype(int) - expected_a).max() <= 2
    heat = heatmap_palette()[read_heatmap_indices(shown["heatmap"], max_pixels=10**8)]
    assert heat.shape == (350, 1050, 3)
    assert tuple(heat[EDIT[1] // 2, EDIT[0] // 2]) == RED

    # Full-resolution tiles: A's and B's pixels exactly, the heatmap red at the edit.
    x, y = EDIT
    column, row = x // 512, y // 512
    tile_a = decode_rgb(_get(api, f"{base}/a/tiles/0/{column}_{row}.png").content)
    tile_b = decode_rgb(_get(api, f"{base}/b/tiles/0/{column}_{row}.png").content)
    assert np.array_equal(tile_a, a[0:512, 1024:1536])
    assert np.array_equal(tile_b, b[0:512, 1024:1536])
    tile_h = _get(api, f"{base}/heatmap/tiles/0/{column}_{row}.png").content
    colours = heatmap_palette()[read_heatmap_indices(tile_h, max_pixels=10**8)]
    assert tuple(colours[y, x - 1024]) == RED and tuple(colours[y, x - 1024 - 20]) != RED
    corner = decode_rgb(_get(api, f"{base}/a/tiles/0/4_1.png").content)
    assert corner.shape == (700 - 512, 2100 - 2048, 3)

    # Deleting the comparison deletes its pyramid (listed in pyramid.json).
    store = api.app.state.store
    some_tile = f"previews/{cid}/pyramid-2048-512/a/0/0_0.png"
    assert store.exists(some_tile) and store.exists(f"previews/{cid}/pyramid.json")
    assert api.client.delete(f"/v1/comparisons/{cid}", headers=api.auth()).status_code < 300
    assert not store.exists(some_tile)
    assert not store.exists(f"previews/{cid}/pyramid-2048-512/heatmap/1.png")
    assert not store.exists(f"previews/{cid}/pyramid.json")


def test_bad_names_levels_tiles_and_other_tenants_are_not_found(sqlite_api: Api) -> None:
    api = sqlite_api
    cid = _succeeded(api, *_pair())
    base = f"/v1/comparisons/{cid}/previews"
    for path in (
        f"{base}/a?level=0",  # full resolution is not a whole-level preview: tiles are
        f"{base}/a?level=2",
        f"{base}/c/tiles/0/0_0.png",
        f"{base}/heatmap/tiles/1/0_0.png",  # level 1 is the preview: not tiled
        f"{base}/a/tiles/0/5_0.png",
        f"{base}/b/tiles/0/0_2.png",
        f"{base}/a/tiles/7/0_0.png",
    ):
        assert_problem(_get(api, path), 404, "preview_not_available")
    assert _get(api, f"{base}/a/tiles/0/x_0.png").status_code == 404  # no such route
    assert _get(api, f"{base}/a?level=-1").status_code == 422
    for path in (base, f"{base}/a?level=1", f"{base}/heatmap/tiles/0/0_0.png"):
        assert_problem(_get(api, path, tenant="other"), 404, "not_found")
    missing = f"/v1/comparisons/{uuid.uuid4()}/previews"
    assert_problem(_get(api, missing), 404, "not_found")
    # A queued comparison has no previews yet.
    a = api.upload(png(photo(64, 48, seed=1)))["id"]
    b = api.upload(png(photo(64, 48, seed=2)))["id"]
    queued = api.compare(a, b)["id"]
    assert_problem(_get(api, f"/v1/comparisons/{queued}/previews"), 404, "preview_not_available")


def test_the_heatmap_preview_comes_with_its_legend_on_request(sqlite_api: Api) -> None:
    api = sqlite_api
    cid = _succeeded(api, *_pair())
    base = f"/v1/comparisons/{cid}/previews"
    plain = _get(api, f"{base}/heatmap?level=1")
    framed = _get(api, f"{base}/heatmap?level=1&legend=true")
    assert plain.status_code == framed.status_code == 200, framed.text
    assert framed.headers["content-type"] == "image/png"
    without, with_ = decode_rgb(plain.content), decode_rgb(framed.content)
    height, width = without.shape[:2]
    assert with_.shape == (height + STRIP_HEIGHT, max(width, STRIP_MIN_WIDTH), 3)
    assert np.array_equal(with_[:height, :width], without)  # the preview's own pixels
    # The strip's bar is drawn with the heatmap's palette: blue at its left end.
    assert tuple(with_[height + 12, 10]) == tuple(heatmap_palette()[0])
    # The full-resolution heatmap (1.5 MP) takes a legend too; A and B have no colour scale.
    full = _get(api, f"{base}/heatmap?legend=true")
    assert full.status_code == 200 and decode_rgb(full.content).shape[0] == HEIGHT + STRIP_HEIGHT
    assert_problem(_get(api, f"{base}/a?level=1&legend=true"), 422, "invalid_request")
    assert_problem(_get(api, f"{base}/heatmap?legend=true", tenant="other"), 404, "not_found")


def test_the_service_keeps_a_small_edit_red_far_below_full_resolution(sqlite_api: Api) -> None:
    """The service with a small preview size (24x reduction): the edit's block is red, the
    pieces are stored once and served from storage afterwards, and the tiles come from a
    background rendering that a tile request waits for."""
    api = sqlite_api
    a, b = _pair()
    cid = uuid.UUID(_succeeded(api, a, b))
    store = api.app.state.store
    tenant = _tenant_id(api)
    with api.sessions() as session:
        manifest = previews.preview_manifest(
            session, tenant_id=tenant, comparison_id=cid, max_side=256, tiled_above_pixels=10**6
        )
        assert manifest["tiled"] is True and manifest["preview_level"] == 4  # 2100 / 16 <= 256
        data = previews.get_pyramid_piece(
            session,
            store,
            tenant_id=tenant,
            comparison_id=cid,
            name="heatmap",
            level=4,
            max_side=256,
        )
        heat = heatmap_palette()[read_heatmap_indices(data, max_pixels=10**8)]
        assert heat.shape == (44, 132, 3)
        assert tuple(heat[EDIT[1] // 16, EDIT[0] // 16]) == RED
        assert np.all(heat == RED, axis=2).sum() <= 2
        # A tile waits for the background rendering (the comparison's lock), then is stored.
        tile = previews.get_pyramid_piece(
            session,
            store,
            tenant_id=tenant,
            comparison_id=cid,
            name="b",
            level=0,
            tile=(2, 1),
            max_side=256,
        )
        assert np.array_equal(decode_rgb(tile), b[512:700, 1024:1536])
        level3 = previews.pyramid_key(cid, PyramidLayout(WIDTH, HEIGHT, 256), "a", 3, (0, 0))
        assert store.exists(level3)
        # Served from storage from now on: an object changed in storage is what comes back.
        key = previews.pyramid_key(cid, PyramidLayout(WIDTH, HEIGHT, 256), "heatmap", 4)
        store.put(key, b"stored", content_type="image/png")
        again = previews.get_pyramid_piece(
            session,
            store,
            tenant_id=tenant,
            comparison_id=cid,
            name="heatmap",
            level=4,
            max_side=256,
        )
        assert again == b"stored"
        # Another preview size renders its own pyramid and forgets the first one.
        previews.get_pyramid_piece(
            session,
            store,
            tenant_id=tenant,
            comparison_id=cid,
            name="a",
            level=0,
            tile=(0, 0),
            max_side=1024,
        )
        assert not store.exists(key)


def test_previews_and_tiles_on_s3_storage(
    make_api: ApiFactory,
    sqlite_url: str,
    s3_endpoint: str,
    s3_bucket_factory: Callable[[], str],
) -> None:
    """The same pyramid on S3 (moto server): pieces uploaded concurrently, then served and
    deleted with the comparison."""
    api = make_api(sqlite_url, storage=s3_storage(s3_endpoint, s3_bucket_factory()))
    a, b = _pair()
    cid = _succeeded(api, a, b)
    base = f"/v1/comparisons/{cid}/previews"
    heat = _get(api, f"{base}/heatmap?level=1")
    assert heat.status_code == 200, heat.text
    colours = heatmap_palette()[read_heatmap_indices(heat.content, max_pixels=10**8)]
    assert tuple(colours[EDIT[1] // 2, EDIT[0] // 2]) == RED
    tile = _get(api, f"{base}/b/tiles/0/2_0.png")
    assert tile.status_code == 200, tile.text
    assert np.array_equal(decode_rgb(tile.content), b[0:512, 1024:1536])
    store = api.app.state.store
    key = f"previews/{cid}/pyramid-2048-512/b/0/4_1.png"
    assert store.exists(key)
    assert api.client.delete(f"/v1/comparisons/{cid}", headers=api.auth()).status_code < 300
    assert not store.exists(key)
