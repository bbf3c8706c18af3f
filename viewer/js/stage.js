// The image stage: one canvas, six views of A, B (in A's frame) and the heatmap, zoom with the
// wheel (to 1:1 and beyond, pixelated), pan by dragging, hover to inspect. Every coordinate is
// in A's pixels; the side-by-side panes share one transform, so zoom and pan stay in step.

import { h, percent } from "./dom.js";
import { ANTIALIAS_BAND, bandOf, colourOf, isAntialias, levelOf } from "./palette.js";
import { createTiles } from "./tiles.js";

export const VIEWS = [
  { id: "heatmap", key: "1", label: "Heatmap over A" },
  { id: "side", key: "2", label: "Side by side" },
  { id: "swipe", key: "3", label: "Swipe" },
  { id: "onion", key: "4", label: "Onion skin" },
  { id: "blink", key: "5", label: "Blink" },
  { id: "changes", key: "6", label: "Changes only" },
];

const MAX_SCALE = 64;
/** Fill of ignored areas (grey over the image; the heatmap greys them too). */
export const IGNORE_FILL = "rgba(128, 128, 128, 0.85)";

/** Pixel access to a bitmap (read once, on first hover). */
function pixelReader(bitmap) {
  let data = null;
  return (x, y) => {
    if (!bitmap) return null;
    if (!data) {
      const canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
      const context = canvas.getContext("2d", { willReadFrequently: true });
      context.drawImage(bitmap, 0, 0);
      data = context.getImageData(0, 0, bitmap.width, bitmap.height).data;
    }
    if (x < 0 || y < 0 || x >= bitmap.width || y >= bitmap.height) return null;
    const i = (y * bitmap.width + x) * 4;
    return [data[i], data[i + 1], data[i + 2], data[i + 3]];
  };
}

/**
 * Max-pooled halvings of a heatmap bitmap: level k is 2^k times smaller, each pixel the most
 * severe of its 2 x 2 block (grey only when the whole block is), computed once per level. Drawn
 * instead of the bitmap when the view is smaller than it, so that a small red patch stays red
 * on screen (the browser's own downscaling averages it away).
 */
function maxPooled(bitmap) {
  const chain = [bitmap];
  let source = null;
  const severity = (data, i) => {
    // Magenta (anti-aliasing) ranks above identical and below any other level.
    if (isAntialias(data[i], data[i + 1], data[i + 2])) return 0.5;
    const level = levelOf(data[i], data[i + 1], data[i + 2]);
    return level === null ? -1 : level;
  };
  return (k) => {
    while (chain.length <= k) {
      if (!source) {
        const canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
        const context = canvas.getContext("2d", { willReadFrequently: true });
        context.drawImage(bitmap, 0, 0);
        source = { w: bitmap.width, h: bitmap.height, data: context.getImageData(0, 0, bitmap.width, bitmap.height).data };
      }
      if (source.w <= 1 && source.h <= 1) break;
      const w = Math.ceil(source.w / 2);
      const hgt = Math.ceil(source.h / 2);
      const out = new Uint8ClampedArray(w * hgt * 4);
      for (let y = 0; y < hgt; y++) {
        for (let x = 0; x < w; x++) {
          let best = -2;
          let from = 0;
          for (let dy = 0; dy < 2; dy++) {
            const sy = 2 * y + dy;
            if (sy >= source.h) break;
            for (let dx = 0; dx < 2; dx++) {
              const sx = 2 * x + dx;
              if (sx >= source.w) break;
              const i = (sy * source.w + sx) * 4;
              const value = severity(source.data, i);
              if (value > best) [best, from] = [value, i];
            }
          }
          out.set(source.data.subarray(from, from + 4), (y * w + x) * 4);
        }
      }
      const canvas = new OffscreenCanvas(w, hgt);
      canvas.getContext("2d").putImageData(new ImageData(out, w, hgt), 0, 0);
      chain.push(canvas);
      source = { w, h: hgt, data: out };
    }
    return chain[Math.min(k, chain.length - 1)];
  };
}

function legend(tolerance) {
  const canvas = h("canvas", { width: 320, height: 14, class: "legend-bar", "aria-hidden": "true" });
  const context = canvas.getContext("2d");
  // The hover marker lives on its own canvas above the image, so hovering redraws no image.
  const overlay = h("canvas", { class: "stage-overlay", "aria-hidden": "true" });
  const overlayContext = overlay.getContext("2d");
  const span = 0.4; // the bar shows d from 0 to 0.4; red from 0.30 on
  for (let x = 0; x < canvas.width; x++) {
    const [r, g, b] = colourOf((x / canvas.width) * span);
    context.fillStyle = `rgb(${r},${g},${b})`;
    context.fillRect(x, 0, 1, canvas.height);
  }
  const mark = Math.round((tolerance / span) * canvas.width);
  context.fillStyle = "#fff";
  context.fillRect(mark - 2, 0, 4, canvas.height);
  context.fillStyle = "#000";
  context.fillRect(mark - 1, 0, 2, canvas.height);
  const levels = (d) => Math.round(d * 255);
  return h(
    "figure",
    { class: "legend" },
    h("figcaption", {}, "Heatmap legend (largest channel difference)"),
    canvas,
    h(
      "ul",
      { class: "legend-text" },
      h("li", {}, h("span", { class: "swatch blue" }), "blue: identical (0 levels)"),
      h("li", {}, h("span", { class: "swatch green" }), `blue to green: noise, up to 5 % (${levels(0.05)} levels)`),
      h("li", {}, h("span", { class: "swatch yellow" }), `green to yellow: soft change, 5 to 15 % (${levels(0.15)} levels)`),
      h("li", {}, h("span", { class: "swatch red" }), `yellow to red: clear change, 15 to 30 %; red above 30 % (${levels(0.3)} levels): content change`),
      h("li", {}, h("span", { class: "swatch magenta" }), "magenta: anti-aliasing, rendering noise not counted as changed"),
      h("li", {}, h("span", { class: "swatch grey" }), "grey: not compared (outside the overlap, or ignored)"),
      h("li", {}, h("span", { class: "swatch mark" }), `black mark: the tolerance, ${percent(tolerance)} (${(tolerance * 255).toFixed(1)} levels)`),
    ),
  );
}

/**
 * Build the stage. images: {a, b, heat} ImageBitmaps on A's grid, at full resolution or
 * downscaled (drawn stretched to A's size; b or heat may be null); result: the result contract;
 * tiled: {comparisonId, manifest} for a big comparison (full-resolution tiles are drawn over the
 * preview when zoomed in, and the hover readout reads them). Returns {element, setView,
 * zoomToRegion, destroy}.
 */
export function createStage(images, result, { bNote = "", ignore = [], onIgnoreChange = () => {}, tiled = null } = {}) {
  const { width, height } = result;
  const regions = result.regions || [];
  const tolerance = result.tolerance ?? 0.1;
  let readA = pixelReader(images.a);
  let readB = pixelReader(images.b);
  let readHeat = pixelReader(images.heat);
  // Big comparisons: tiles for deep zoom and exact hover values (A's full-resolution pixels).
  const tiles = tiled ? createTiles(tiled.comparisonId, tiled.manifest, () => {
    schedule();
    if (state.hover && readout.dataset.exact === "loading") requestInspect();
  }) : null;
  const state = { view: "heatmap", scale: 1, tx: 0, ty: 0, opacity: 0.6, swipe: 0.5, onion: 0.5, blinkMs: 500, blinkA: true, selected: -1, fitted: true, hover: null, ignore: ignore.map((r) => [...r]), drawing: false, draft: null };

  const canvas = h("canvas", { class: "stage-canvas", tabindex: 0, "aria-label": "Image view: wheel to zoom, drag to pan, arrow keys to pan, + and - to zoom" });
  const context = canvas.getContext("2d");
  // The hover marker lives on its own canvas above the image, so hovering redraws no image.
  const overlay = h("canvas", { class: "stage-overlay", "aria-hidden": "true" });
  const overlayContext = overlay.getContext("2d");
  const readout = h("p", { class: "readout", role: "status", "aria-live": "polite", "data-role": "readout" }, "Hover the image to inspect a pixel.");
  const viewName = h("span", { class: "view-name", "data-role": "view-name" });
  const zoomLabel = h("span", { class: "zoom-label", "data-role": "zoom" });
  const tabs = VIEWS.map((view) =>
    h("button", { type: "button", class: "view-tab", "data-view": view.id, "aria-pressed": "false", onclick: () => setView(view.id) }, h("kbd", {}, view.key), ` ${view.label}`),
  );
  const slider = (label, min, max, step, value, onInput, extra = {}) => {
    const input = h("input", { type: "range", min, max, step, value, "aria-label": label, ...extra });
    input.addEventListener("input", () => onInput(Number(input.value)));
    return h("label", { class: "slider" }, `${label} `, input);
  };
  const controls = {
    heatmap: slider("Heatmap opacity", 0, 1, 0.05, state.opacity, (v) => ((state.opacity = v), schedule())),
    swipe: slider("Swipe position", 0, 1, 0.01, state.swipe, (v) => ((state.swipe = v), schedule())),
    onion: slider("B opacity", 0, 1, 0.05, state.onion, (v) => ((state.onion = v), schedule())),
    blink: slider("Blink interval (ms)", 100, 2000, 50, state.blinkMs, (v) => ((state.blinkMs = v), restartBlink())),
  };
  const blinkLabel = h("span", { class: "blink-label", "data-role": "blink-label" });
  const drawButton = h("button", { type: "button", class: "draw-ignore", "aria-pressed": "false", onclick: () => setDrawing(!state.drawing) }, "Draw ignore area");
  const toolbar = h(
    "div",
    { class: "toolbar" },
    h("div", { class: "tabs", role: "group", "aria-label": "Views (keys 1 to 6)" }, tabs),
    h("div", { class: "view-controls" }, Object.values(controls), blinkLabel),
    h("div", { class: "zoom" }, drawButton, h("button", { type: "button", onclick: () => fit() }, "Fit"), h("button", { type: "button", onclick: () => zoomAt(1 / state.scale) }, "1:1"), zoomLabel),
  );
  const frame = h("div", { class: "stage-frame" }, canvas, overlay);
  const element = h(
    "section",
    { class: "stage", "aria-label": "Views", "data-view": state.view },
    h("h2", {}, "View: ", viewName),
    toolbar,
    readout,
    frame,
    h("p", { class: "note", "data-role": "images-note" }, bNote),
    legend(tolerance),
  );

  // --- geometry ---------------------------------------------------------------------------
  const paneWidth = () => (state.view === "side" ? canvas.clientWidth / 2 : canvas.clientWidth);
  function fit() {
    const w = paneWidth();
    const hgt = canvas.clientHeight;
    if (!w || !hgt) return;
    state.scale = Math.min(w / width, hgt / height) * 0.98;
    state.tx = (w - width * state.scale) / 2;
    state.ty = (hgt - height * state.scale) / 2;
    state.fitted = true;
    schedule();
  }
  function zoomAt(factor, px = paneWidth() / 2, py = canvas.clientHeight / 2) {
    const minScale = Math.min(paneWidth() / width, canvas.clientHeight / height) / 4;
    const scale = Math.max(minScale, Math.min(MAX_SCALE, state.scale * factor));
    const ix = (px - state.tx) / state.scale;
    const iy = (py - state.ty) / state.scale;
    state.scale = scale;
    state.tx = px - ix * scale;
    state.ty = py - iy * scale;
    state.fitted = false;
    schedule();
  }
  function zoomToRegion(index) {
    const region = regions[index];
    if (!region) return;
    state.selected = index;
    const w = paneWidth();
    const hgt = canvas.clientHeight;
    const pad = Math.max(16, Math.max(region.width, region.height) * 0.5);
    state.scale = Math.min(MAX_SCALE, Math.min(w / (region.width + 2 * pad), hgt / (region.height + 2 * pad)));
    state.tx = w / 2 - (region.x + region.width / 2) * state.scale;
    state.ty = hgt / 2 - (region.y + region.height / 2) * state.scale;
    state.fitted = false;
    schedule();
  }
  /** Pane coordinates of a canvas point (the right pane of side by side maps onto the left). */
  function paneOf(clientX, clientY) {
    const box = canvas.getBoundingClientRect();
    let px = clientX - box.left;
    const py = clientY - box.top;
    let pane = 0;
    if (state.view === "side" && px >= box.width / 2) {
      px -= box.width / 2;
      pane = 1;
    }
    return { px, py, pane };
  }

  // --- drawing ------------------------------------------------------------------------------
  let frameRequest = 0;
  function schedule() {
    if (!frameRequest) frameRequest = requestAnimationFrame(draw);
  }
  let visible = [0, 0, width, height]; // the pane's area in A's pixels, set by draw()
  let deviceScale = 1; // device pixels per A pixel
  let pooledHeat = null; // [bitmap, maxPooled(bitmap)] of a big comparison's heatmap preview
  function drawImage(bitmap, name) {
    if (bitmap && tiles && name === "heatmap") {
      if (!pooledHeat || pooledHeat[0] !== bitmap) pooledHeat = [bitmap, maxPooled(bitmap)];
      const ratio = bitmap.width / width / deviceScale; // preview pixels per device pixel
      if (ratio > 1) bitmap = pooledHeat[1](Math.ceil(Math.log2(ratio)));
    }
    if (bitmap) context.drawImage(bitmap, 0, 0, width, height);
    if (tiles && name) {
      // A downscaled bitmap is blurred when enlarged: tiles are drawn at their own scale.
      const smooth = context.imageSmoothingEnabled;
      context.imageSmoothingEnabled = deviceScale < 1;
      tiles.draw(context, name, visible, deviceScale);
      context.imageSmoothingEnabled = smooth;
    }
  }
  function outlineRegions() {
    regions.forEach((region, index) => {
      const selected = index === state.selected;
      context.lineWidth = (selected ? 3 : 2) / state.scale;
      context.strokeStyle = selected ? "#ffdd00" : "#ff2d2d";
      context.strokeRect(region.x, region.y, region.width, region.height);
      context.fillStyle = context.strokeStyle;
      context.font = `${12 / state.scale}px sans-serif`;
      context.fillText(String(index + 1), region.x + 2 / state.scale, region.y - 3 / state.scale);
    });
  }
  /** Ignored areas (and the one being drawn): grey, outlined, in every view and pane. */
  function drawIgnored() {
    const rects = state.draft ? [...state.ignore, draftRect()] : state.ignore;
    for (const [x, y, w, hgt] of rects) {
      context.fillStyle = IGNORE_FILL;
      context.fillRect(x, y, w, hgt);
      context.lineWidth = 2 / state.scale;
      context.setLineDash([6 / state.scale, 4 / state.scale]);
      context.strokeStyle = "#f3f4f6";
      context.strokeRect(x, y, w, hgt);
      context.setLineDash([]);
    }
  }
  function draw() {
    frameRequest = 0;
    const dpr = window.devicePixelRatio || 1;
    const cw = canvas.clientWidth;
    const ch = canvas.clientHeight;
    if (canvas.width !== Math.round(cw * dpr) || canvas.height !== Math.round(ch * dpr)) {
      canvas.width = Math.round(cw * dpr);
      canvas.height = Math.round(ch * dpr);
    }
    context.setTransform(1, 0, 0, 1, 0, 0);
    context.fillStyle = "#20242b";
    context.fillRect(0, 0, canvas.width, canvas.height);
    context.imageSmoothingEnabled = state.scale < 1 || Boolean(tiles);
    const paneW = paneWidth();
    deviceScale = state.scale * dpr;
    visible = [-state.tx / state.scale, -state.ty / state.scale, (paneW - state.tx) / state.scale, (ch - state.ty) / state.scale];
    const panes = state.view === "side" ? 2 : 1;
    for (let pane = 0; pane < panes; pane++) {
      context.save();
      context.setTransform(dpr, 0, 0, dpr, pane * paneW * dpr, 0);
      context.beginPath();
      context.rect(0, 0, paneW, ch);
      context.clip();
      context.translate(state.tx, state.ty);
      context.scale(state.scale, state.scale);
      drawView(pane, paneW);
      context.restore();
    }
    if (state.view === "side") {
      context.setTransform(dpr, 0, 0, dpr, 0, 0);
      context.fillStyle = "#fff";
      context.fillRect(paneW - 1, 0, 2, ch);
      label("A", 8, 18);
      label("B", paneW + 8, 18);
    } else if (state.view === "swipe") {
      const x = state.swipe * cw;
      context.setTransform(dpr, 0, 0, dpr, 0, 0);
      context.fillStyle = "#fff";
      context.fillRect(x - 1, 0, 2, ch);
      label("A", 8, 18);
      label("B", cw - 22, 18);
    } else if (state.view === "blink") {
      context.setTransform(dpr, 0, 0, dpr, 0, 0);
      label(state.blinkA ? "A" : "B", 8, 18);
    }
    canvas.dataset.scale = String(state.scale);
    canvas.dataset.tx = String(state.tx);
    canvas.dataset.ty = String(state.ty);
    if (tiles) {
      const level = tiles.levelFor(deviceScale);
      canvas.dataset.level = String(level);
      canvas.dataset.tilesFetched = String(tiles.stats.fetched);
      canvas.dataset.tileLevels = [...tiles.stats.levels].sort().join(",");
    }
    zoomLabel.textContent = `${Math.round(state.scale * 100)} %`;
    scheduleMarker();
  }
  function label(text, x, y) {
    context.font = "bold 14px sans-serif";
    context.fillStyle = "rgba(0,0,0,0.7)";
    context.fillRect(x - 4, y - 14, context.measureText(text).width + 8, 19);
    context.fillStyle = "#fff";
    context.fillText(text, x, y);
  }
  function drawView(pane) {
    const { a, b, heat } = images;
    switch (state.view) {
      case "heatmap":
        drawImage(a, "a");
        context.globalAlpha = state.opacity;
        drawImage(heat, "heatmap");
        context.globalAlpha = 1;
        break;
      case "side":
        drawImage(pane === 0 ? a : b, pane === 0 ? "a" : "b");
        break;
      case "swipe": {
        drawImage(b, "b");
        context.save();
        context.beginPath();
        const edge = (state.swipe * canvas.clientWidth - state.tx) / state.scale;
        context.rect(-1e6, -1e6, edge + 1e6, 2e6);
        context.clip();
        drawImage(a, "a");
        context.restore();
        break;
      }
      case "onion":
        drawImage(a, "a");
        context.globalAlpha = state.onion;
        drawImage(b, "b");
        context.globalAlpha = 1;
        break;
      case "blink":
        drawImage(state.blinkA || !b ? a : b, state.blinkA || !b ? "a" : "b");
        break;
      case "changes":
        drawImage(a, "a");
        context.fillStyle = "rgba(0,0,0,0.35)";
        context.fillRect(0, 0, width, height);
        for (const region of regions) {
          context.save();
          context.beginPath();
          context.rect(region.x, region.y, region.width, region.height);
          context.clip();
          drawImage(a, "a");
          context.restore();
        }
        outlineRegions();
        break;
    }
    if (state.view !== "changes" && state.selected >= 0) outlineRegions();
    drawIgnored();
  }

  let markerRequest = 0;
  function scheduleMarker() {
    if (!markerRequest) markerRequest = requestAnimationFrame(drawMarker);
  }
  /** The hovered pixel's outline, in every pane, on the overlay canvas. */
  function drawMarker() {
    markerRequest = 0;
    const dpr = window.devicePixelRatio || 1;
    if (overlay.width !== canvas.width || overlay.height !== canvas.height) {
      overlay.width = canvas.width;
      overlay.height = canvas.height;
    }
    overlayContext.setTransform(1, 0, 0, 1, 0, 0);
    overlayContext.clearRect(0, 0, overlay.width, overlay.height);
    if (!state.hover) return;
    const [hx, hy] = state.hover;
    const size = Math.max(state.scale, 10);
    const panes = state.view === "side" ? 2 : 1;
    overlayContext.lineWidth = 2 * dpr;
    for (let pane = 0; pane < panes; pane++) {
      const cx = (pane * paneWidth() + state.tx + (hx + 0.5) * state.scale) * dpr;
      const cy = (state.ty + (hy + 0.5) * state.scale) * dpr;
      const half = (size / 2) * dpr;
      overlayContext.strokeStyle = "#000";
      overlayContext.strokeRect(cx - half - dpr, cy - half - dpr, 2 * half + 2 * dpr, 2 * half + 2 * dpr);
      overlayContext.strokeStyle = "#fff";
      overlayContext.strokeRect(cx - half, cy - half, 2 * half, 2 * half);
    }
  }

  // --- views and blink ------------------------------------------------------------------------
  let blinkTimer = 0;
  function restartBlink() {
    clearInterval(blinkTimer);
    blinkTimer = 0;
    if (state.view === "blink") {
      blinkTimer = setInterval(() => {
        state.blinkA = !state.blinkA;
        blinkLabel.textContent = `showing ${state.blinkA ? "A" : "B"}`;
        schedule();
      }, state.blinkMs);
    }
  }
  function setView(id) {
    const view = VIEWS.find((v) => v.id === id);
    if (!view) return;
    const wasSide = state.view === "side";
    state.view = id;
    element.dataset.view = id;
    viewName.textContent = view.label;
    for (const tab of tabs) tab.setAttribute("aria-pressed", String(tab.dataset.view === id));
    for (const [name, control] of Object.entries(controls)) control.hidden = name !== id;
    blinkLabel.hidden = id !== "blink";
    state.blinkA = true;
    restartBlink();
    if (wasSide !== (id === "side") && state.fitted) fit();
    schedule();
  }

  // --- input ----------------------------------------------------------------------------------
  canvas.addEventListener("wheel", (event) => {
    event.preventDefault();
    const { px, py } = paneOf(event.clientX, event.clientY);
    zoomAt(Math.exp(-event.deltaY * 0.0015), px, py);
  }, { passive: false });
  let drag = null;
  /** A's pixel under a pointer event, clamped into the image. */
  function pixelAt(event) {
    const { px, py } = paneOf(event.clientX, event.clientY);
    const clamp = (v, n) => Math.max(0, Math.min(n - 1, v));
    return [clamp(Math.floor((px - state.tx) / state.scale), width), clamp(Math.floor((py - state.ty) / state.scale), height)];
  }
  /** The rectangle being drawn, [x, y, w, h] in A's pixels (both corners included). */
  function draftRect() {
    const [x0, y0, x1, y1] = state.draft;
    return [Math.min(x0, x1), Math.min(y0, y1), Math.abs(x1 - x0) + 1, Math.abs(y1 - y0) + 1];
  }
  function setDrawing(on) {
    state.drawing = on;
    drawButton.setAttribute("aria-pressed", String(on));
    canvas.classList.toggle("drawing", on);
  }
  canvas.addEventListener("pointerdown", (event) => {
    canvas.setPointerCapture(event.pointerId);
    if (state.drawing) {
      const [x, y] = pixelAt(event);
      state.draft = [x, y, x, y];
      schedule();
      return;
    }
    drag = { x: event.clientX, y: event.clientY, tx: state.tx, ty: state.ty };
  });
  canvas.addEventListener("pointerup", () => {
    drag = null;
    if (!state.draft) return;
    state.ignore.push(draftRect());
    state.draft = null;
    schedule();
    onIgnoreChange(state.ignore.map((r) => [...r]));
  });
  canvas.addEventListener("pointercancel", () => {
    drag = null;
    state.draft = null;
    schedule();
  });
  canvas.addEventListener("pointerleave", () => {
    state.hover = null;
    scheduleMarker();
  });
  let hoverEvent = null;
  let hoverRequest = 0;
  canvas.addEventListener("pointermove", (event) => {
    if (state.draft) {
      const [x, y] = pixelAt(event);
      state.draft[2] = x;
      state.draft[3] = y;
      schedule();
    } else if (drag) {
      state.tx = drag.tx + event.clientX - drag.x;
      state.ty = drag.ty + event.clientY - drag.y;
      state.fitted = false;
      schedule();
    }
    hoverEvent = event;
    requestInspect();
  });
  function requestInspect() {
    if (!hoverRequest) hoverRequest = requestAnimationFrame(inspect);
  }
  canvas.addEventListener("keydown", (event) => {
    const step = 40;
    const moves = { ArrowLeft: [step, 0], ArrowRight: [-step, 0], ArrowUp: [0, step], ArrowDown: [0, -step] };
    if (moves[event.key]) {
      event.preventDefault();
      event.stopPropagation();
      state.tx += moves[event.key][0];
      state.ty += moves[event.key][1];
      schedule();
    } else if (event.key === "+" || event.key === "=") zoomAt(1.25);
    else if (event.key === "-") zoomAt(0.8);
    else if (event.key === "0") fit();
  });
  function inspect() {
    hoverRequest = 0;
    if (!hoverEvent) return;
    const { px, py } = paneOf(hoverEvent.clientX, hoverEvent.clientY);
    const x = Math.floor((px - state.tx) / state.scale);
    const y = Math.floor((py - state.ty) / state.scale);
    const inside = x >= 0 && y >= 0 && x < width && y < height;
    const hover = inside ? [x, y] : null;
    if (String(hover) !== String(state.hover)) {
      state.hover = hover;
      scheduleMarker();
    }
    if (!inside) {
      readout.textContent = `x ${x}, y ${y}: outside image A (${width} × ${height} px)`;
      return;
    }
    let pa, pb, heat;
    if (tiles) {
      // A's full-resolution pixels, from the level-0 tiles under the pointer.
      pa = tiles.pixel("a", x, y);
      pb = images.b ? tiles.pixel("b", x, y) : null;
      heat = images.heat ? tiles.pixel("heatmap", x, y) : null;
      if (pa === undefined || pb === undefined || heat === undefined) {
        readout.dataset.exact = "loading";
        readout.textContent = `x ${x}, y ${y} · loading full-resolution pixels…`;
        return;
      }
    } else {
      pa = readA(x, y);
      pb = readB(x, y);
      heat = readHeat(x, y);
    }
    readout.dataset.exact = "true";
    const rgb = (p) => (p ? (p[3] === 0 ? "transparent (outside B)" : `${p[0]} ${p[1]} ${p[2]}${p[3] < 255 ? ` α${p[3]}` : ""}`) : "n/a");
    // The level: the largest channel difference of A and B in A's frame where both are known;
    // the heatmap says where nothing was compared (grey), and is the fallback (its full red
    // covers every level from 77 up, hence "at least").
    let level = null;
    let atLeast = false;
    let compared = true;
    const antialiased = Boolean(heat && isAntialias(heat[0], heat[1], heat[2]));
    if (heat && !antialiased) {
      level = levelOf(heat[0], heat[1], heat[2]);
      compared = level !== null;
      atLeast = heat[0] === 255 && heat[1] === 0 && heat[2] === 0;
    }
    if (compared && pa && pb && pb[3] === 255) {
      level = Math.max(...[0, 1, 2].map((k) => Math.abs(pa[k] - pb[k])));
      atLeast = false;
    }
    const d = level === null ? null : level / 255;
    const band = antialiased ? ANTIALIAS_BAND : bandOf(d);
    const regionIndex = regions.findIndex((r) => x >= r.x && x < r.x + r.width && y >= r.y && y < r.y + r.height);
    const parts = [
      `x ${x}, y ${y}`,
      `A ${rgb(pa)}`,
      `B ${rgb(pb)}`,
      d === null ? "difference: not compared" : `difference ${atLeast ? "at least " : ""}${level} of 255 (${percent(d)})${d > tolerance ? ", above the tolerance" : ""}`,
      `band ${band.name}: ${band.words}`,
      regionIndex >= 0 ? `region ${regionIndex + 1} (${regions[regionIndex].width} × ${regions[regionIndex].height} px)` : "no region",
    ];
    readout.textContent = parts.join(" · ");
  }

  const onKey = (event) => {
    const target = event.target;
    const typing = target && ((target.tagName === "INPUT" && target.type !== "range") || ["SELECT", "TEXTAREA"].includes(target.tagName));
    if (typing || document.querySelector("dialog[open]")) return;
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    const view = VIEWS.find((v) => v.key === event.key);
    if (view) {
      event.preventDefault();
      setView(view.id);
    }
  };
  document.addEventListener("keydown", onKey);
  const resize = new ResizeObserver(() => (state.fitted ? fit() : schedule()));
  resize.observe(frame);
  setView("heatmap");

  return {
    element,
    setView,
    /** Replace some of the images (e.g. the server's previews once they arrive). */
    setImages(update, note) {
      Object.assign(images, update);
      readA = pixelReader(images.a);
      readB = pixelReader(images.b);
      readHeat = pixelReader(images.heat);
      if (note !== undefined) element.querySelector("[data-role=images-note]").textContent = note;
      element.dataset.images = "final";
      schedule();
    },
    zoomToRegion,
    /** Replace the ignored areas ([[x, y, w, h], ...] in A's pixels). */
    setIgnore(rects) {
      state.ignore = rects.map((r) => [...r]);
      schedule();
    },
    destroy() {
      document.removeEventListener("keydown", onKey);
      resize.disconnect();
      clearInterval(blinkTimer);
    },
  };
}

