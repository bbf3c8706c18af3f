// Deep zoom for big comparisons: full-resolution tiles of A, B (in A's frame) and the heatmap,
// fetched for the visible area when the view zooms past the downscaled preview, and read for
// the hover readout so its values are A's and B's own pixels, never the preview's.
//
// The manifest (GET /v1/comparisons/{id}/previews) lists the levels: 0 is full resolution,
// each next one half, the last one the preview (drawn whole underneath). Tiles are ImageBitmaps
// decoded without premultiplying or colour conversion (their pixels read back exactly), kept
// in a small LRU cache; a few are fetched at a time, the most recently wanted first.

import { getBlob } from "./api.js";

/** Most tiles kept decoded (each 512 x 512 x 4 bytes = 1 MiB): bounds the page's memory. */
const MAX_TILES = 96;
/** Tiles fetched at once. */
const MAX_IN_FLIGHT = 6;
/** Level-0 tiles whose pixels are kept readable for the hover readout. */
const MAX_READABLE = 9;

export const tilePath = (comparisonId, name, level, column, row) =>
  `/v1/comparisons/${comparisonId}/previews/${name}/tiles/${level}/${column}_${row}.png`;

/**
 * A tile source. manifest: the API's preview manifest; onChange: called when tiles arrive.
 * Returns {draw(context, name, rect, scale), pixel(name, x, y), levelFor(scale), stats}.
 */
export function createTiles(comparisonId, manifest, onChange) {
  const size = manifest.tile_size;
  const top = manifest.preview_level;
  const levels = manifest.levels;
  const cache = new Map(); // key -> {bitmap, data} (Map order: least recently used first)
  const failed = new Set();
  const inFlight = new Set();
  let wanted = []; // keys, most wanted last
  const stats = { fetched: 0, levels: new Set() };

  const keyOf = (name, level, column, row) => `${name}/${level}/${column}_${row}`;
  function touch(key) {
    const entry = cache.get(key);
    if (entry) {
      cache.delete(key);
      cache.set(key, entry);
    }
    return entry;
  }
  function want(key) {
    if (cache.has(key) || inFlight.has(key) || failed.has(key)) return;
    const index = wanted.indexOf(key);
    if (index >= 0) wanted.splice(index, 1);
    wanted.push(key);
  }
  function pump() {
    while (inFlight.size < MAX_IN_FLIGHT && wanted.length) {
      const key = wanted.pop();
      if (cache.has(key) || inFlight.has(key)) continue;
      inFlight.add(key);
      const [name, level, rest] = key.split("/");
      const [column, row] = rest.split("_").map(Number);
      getBlob(tilePath(comparisonId, name, Number(level), column, row))
        .then((blob) => (blob ? createImageBitmap(blob, { premultiplyAlpha: "none", colorSpaceConversion: "none" }) : null))
        .then((bitmap) => {
          if (!bitmap) {
            failed.add(key);
            return;
          }
          cache.set(key, { bitmap, data: null });
          stats.fetched += 1;
          stats.levels.add(Number(level));
          while (cache.size > MAX_TILES) {
            const [oldest, entry] = cache.entries().next().value;
            entry.bitmap.close();
            cache.delete(oldest);
          }
        })
        .catch(() => failed.add(key))
        .finally(() => {
          inFlight.delete(key);
          pump();
          onChange();
        });
    }
  }

  /** The level to draw at a scale (screen px per A px, times the device ratio); top: none. */
  function levelFor(scale) {
    if (scale <= 0) return top;
    const level = Math.floor(Math.log2(1 / scale));
    return Math.max(0, Math.min(top, level));
  }

  /** Draw the loaded tiles of `name` covering rect [x0, y0, x1, y1] (A's pixels); ask for
   *  the missing ones (the centre first). The context's transform maps A's pixels. */
  function draw(context, name, rect, scale) {
    const level = levelFor(scale);
    if (level >= top) return;
    const factor = 2 ** level;
    const span = size * factor; // A's pixels per tile
    const { columns, rows } = levels[level];
    const c0 = Math.max(0, Math.floor(rect[0] / span));
    const c1 = Math.min(columns - 1, Math.floor((rect[2] - 1) / span));
    const r0 = Math.max(0, Math.floor(rect[1] / span));
    const r1 = Math.min(rows - 1, Math.floor((rect[3] - 1) / span));
    const cx = (rect[0] + rect[2]) / 2 / span;
    const cy = (rect[1] + rect[3]) / 2 / span;
    const missing = [];
    for (let row = r0; row <= r1; row++) {
      for (let column = c0; column <= c1; column++) {
        const key = keyOf(name, level, column, row);
        const entry = touch(key);
        if (entry) {
          const { bitmap } = entry;
          context.drawImage(bitmap, column * span, row * span, bitmap.width * factor, bitmap.height * factor);
        } else {
          missing.push([Math.hypot(column + 0.5 - cx, row + 0.5 - cy), key]);
        }
      }
    }
    missing.sort((p, q) => q[0] - p[0]); // farthest first: the centre ends up most wanted
    for (const [, key] of missing) want(key);
    pump();
  }

  /** [r, g, b, a] of A's pixel (x, y) in image `name` at full resolution; undefined while its
   *  tile is loading (onChange is called when it arrives); null when there is none. */
  function pixel(name, x, y) {
    const column = Math.floor(x / size);
    const row = Math.floor(y / size);
    const key = keyOf(name, 0, column, row);
    if (failed.has(key)) return null;
    const entry = touch(key);
    if (!entry) {
      want(key);
      pump();
      return undefined;
    }
    if (!entry.data) {
      const { bitmap } = entry;
      const canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
      const context = canvas.getContext("2d", { willReadFrequently: true });
      context.drawImage(bitmap, 0, 0);
      entry.data = context.getImageData(0, 0, bitmap.width, bitmap.height).data;
      const readable = [...cache.values()].filter((e) => e.data && e !== entry);
      for (const old of readable.slice(0, Math.max(0, readable.length - MAX_READABLE + 1))) old.data = null;
    }
    const { bitmap, data } = entry;
    const i = ((y - row * size) * bitmap.width + (x - column * size)) * 4;
    return [data[i], data[i + 1], data[i + 2], data[i + 3]];
  }

  return { draw, pixel, levelFor, stats, top };
}
