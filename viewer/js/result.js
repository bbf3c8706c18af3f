// The result page /c/{id}: the job's state while queued or running, then the verdict and
// summary as the headline, SSIM as the big number, the other scores, the alignment, the
// findings, the regions (click to zoom) and the six views.

import { ApiError, getBlob, getJson, postJson, previewPath, request } from "./api.js";
import { allComparisons, worstFirst } from "./batch.js";
import { h, navigate, percent, sleep, verdictWords } from "./dom.js";
import { localFiles } from "./local.js";
import { createStage } from "./stage.js";

const FINAL = new Set(["succeeded", "failed", "canceled"]);

export function renderResult(main, comparisonId) {
  let alive = true;
  let stage = null;
  const status = h("p", { class: "job-state", role: "status", "data-role": "job-state" }, "Loading…");
  main.append(h("h1", { class: "visually-hidden" }, "Comparison result"), status);
  (async () => {
    let comparison;
    const started = performance.now();
    for (;;) {
      try {
        const { data, response } = await request("GET", `/v1/comparisons/${comparisonId}`);
        comparison = data;
        if (FINAL.has(comparison.state)) break;
        const seconds = (performance.now() - started) / 1000;
        status.textContent = `Comparison ${comparison.state} (${seconds.toFixed(0)} s)…`;
        status.dataset.state = comparison.state;
        const retry = Number(response.headers.get("Retry-After")) || 1;
        await sleep(Math.min(retry * 1000, seconds < 5 ? 300 : 1000));
      } catch (error) {
        status.textContent = error instanceof ApiError ? `${error.detail} (${error.code})` : String(error);
        status.classList.add("error");
        return;
      }
      if (!alive) return;
    }
    if (!alive) return;
    status.dataset.state = comparison.state;
    if (comparison.state !== "succeeded") {
      status.classList.add("error");
      status.textContent =
        comparison.state === "failed"
          ? `Failed: ${comparison.error.message} (${comparison.error.code})`
          : "This comparison was canceled.";
      return;
    }
    status.textContent = "Succeeded.";
    stage = await showResult(main, comparison, () => alive);
  })();
  const onKey = (event) => {
    const nav = main.querySelector("[data-role=batch-nav]");
    const typing = ["INPUT", "SELECT", "TEXTAREA"].includes(event.target?.tagName) && event.target.type !== "range";
    if (!nav || typing || document.querySelector("dialog[open]")) return;
    const target = event.key === "ArrowRight" ? nav.dataset.next : event.key === "ArrowLeft" ? nav.dataset.prev : null;
    if (target) {
      event.preventDefault();
      navigate(`/c/${target}`);
    }
  };
  document.addEventListener("keydown", onKey);
  return () => {
    alive = false;
    document.removeEventListener("keydown", onKey);
    if (stage) stage.destroy();
  };
}

/** "Pair i of N" with previous/next (also the arrow keys), in the batch page's order. */
async function batchNav(comparison) {
  const nav = h("nav", { class: "batch-nav", "aria-label": "Pairs of the batch", "data-role": "batch-nav" }, h("a", { href: `/b/${comparison.batch_id}` }, "Back to the batch"));
  allComparisons(comparison.batch_id)
    .then((items) => {
      const order = items.sort(worstFirst);
      const index = order.findIndex((c) => c.id === comparison.id);
      if (index < 0) return;
      const prev = order[index - 1];
      const next = order[index + 1];
      if (prev) nav.dataset.prev = prev.id;
      if (next) nav.dataset.next = next.id;
      nav.append(
        " · ",
        prev ? h("a", { href: `/c/${prev.id}`, rel: "prev" }, "← previous") : "← previous",
        ` · pair ${index + 1} of ${order.length} (arrow keys) · `,
        next ? h("a", { href: `/c/${next.id}`, rel: "next" }, "next →") : "next →",
      );
    })
    .catch(() => {});
  return nav;
}

function metric(label, value, role) {
  return h("div", { class: "metric" }, h("dt", {}, label), h("dd", { "data-role": role }, value));
}

function alignmentText(alignment) {
  if (!alignment) return "n/a";
  if (!alignment.applied) return `not applied${alignment.reason ? `: ${alignment.reason}` : ""}`;
  const [dx, dy] = alignment.translation || [0, 0];
  const parts = [
    `shift ${dx >= 0 ? "+" : ""}${dx.toFixed(1)}, ${dy >= 0 ? "+" : ""}${dy.toFixed(1)} px`,
    `rotation ${alignment.rotation_deg?.toFixed(2)}°`,
    `scale ${alignment.scale?.toFixed(3)}×`,
  ];
  return parts.join(", ");
}

const signed = (value, digits = 1) => `${value >= 0 ? "+" : ""}${Number(value).toFixed(digits)}`;
const fixed = (value, digits = 2) => (typeof value === "number" ? value.toFixed(digits) : String(value));

/** Each finding kind in words, from its details (core/imaging/findings.py lists the kinds). */
const FINDING_WORDS = {
  jpeg_reencode: (d) => `Re-encoded as JPEG (quality ≈ ${d.quality}, ${d.subsampling})`,
  chroma_subsampling: (d) => `Chroma subsampling changed (A ${d.a}, B ${d.b})`,
  resampled: (d) => `Resampled (scale ${fixed(d.scale, 3)}×)`,
  crop: (d) => `Cropped: B covers ${percent(d.overlap_ratio)} of A`,
  rotation: (d) => (d.perspective ? `Perspective warp (rotation ${fixed(d.rotation_deg)}°)` : `Rotated ${fixed(d.rotation_deg)}°`),
  shift: (d) => `Shifted ${signed(d.dx)}, ${signed(d.dy)} px`,
  flip: (d) => `Mirrored (${d.axis})`,
  greyscale: () => "Converted to greyscale",
  blur: (d) => `Blurred (sharpness ${fixed(d.ratio)}× A's)`,
  sharpen: (d) => `Sharpened (sharpness ${fixed(d.ratio)}× A's)`,
  tone: (d) => `Brightness / contrast changed (gain ${fixed(d.gain)}, offset ${signed(d.offset)} levels, gamma ${fixed(d.gamma)})`,
  colour: (d) => `Colour shifted (saturation ${fixed(d.saturation_ratio)}× A's)`,
  antialiasing: (d) => `Anti-aliasing noise on ${percent(d.ratio)} of pixels (${d.pixels} px), not counted as changed`,
  edit: (d) => {
    const kinds = [...new Set((d.regions || []).map((r) => r.kind).filter(Boolean))];
    return `${d.count} significant ${d.count === 1 ? "region" : "regions"}${kinds.length ? ` (${kinds.join(", ")})` : ""}`;
  },
};

/** One finding as a sentence: its words (or kind and details as key = value), and how sure. */
function findingWords(item) {
  if (typeof item === "string") return item;
  const details = item.details || {};
  const words = FINDING_WORDS[item.kind];
  let text;
  try {
    text = words ? words(details) : "";
  } catch {
    text = "";
  }
  if (!text) {
    const pairs = Object.entries(details).map(([key, value]) => `${key} = ${typeof value === "object" ? JSON.stringify(value) : value}`);
    text = `${item.kind || "finding"}${pairs.length ? `: ${pairs.join(", ")}` : ""}`;
  }
  const sure = typeof item.confidence === "number" && item.confidence < 1 ? ` · confidence ${percent(item.confidence)}` : "";
  return text + sure;
}

function findingsList(findings) {
  if (!findings || (Array.isArray(findings) && !findings.length)) return null;
  const items = Array.isArray(findings) ? findings : Object.entries(findings).map(([k, v]) => ({ kind: k, details: v }));
  return h(
    "section",
    { class: "findings", "aria-label": "Findings" },
    h("h2", {}, "Findings"),
    h(
      "ul",
      {},
      items.map((item) => h("li", { "data-kind": item.kind || "" }, findingWords(item))),
    ),
  );
}

async function bitmapOf(blob) {
  if (!blob) return null;
  try {
    return await createImageBitmap(blob);
  } catch {
    return null;
  }
}

const ALIGNED_NOTE = "B is shown warped into A's frame (the aligned preview); outside the overlap it is transparent.";

/** The server's previews on A's grid (rendered on first request), as bitmaps. */
async function serverPreviews(comparison) {
  const [a, b] = await Promise.all(["a", "b"].map((name) => getBlob(previewPath(comparison.id, name)).then(bitmapOf)));
  const aligned = comparison.result.alignment && comparison.result.alignment.applied;
  if (a && b) return { images: { a, b }, note: aligned ? ALIGNED_NOTE : "" };
  return { images: {}, note: "The server has no preview of these images: views of A and B use your files where it can." };
}

/**
 * A big comparison's images: the downscaled previews of A, B in A's frame and the heatmap
 * (the heatmap's keeps each block's worst difference), drawn stretched to A's size; the stage
 * adds full-resolution tiles when zoomed in. Null when the comparison is not big.
 */
async function bigPreviews(comparison) {
  let manifest;
  try {
    manifest = await getJson(`/v1/comparisons/${comparison.id}/previews`);
  } catch {
    return null;
  }
  if (!manifest.tiled) return null;
  const level = manifest.preview_level;
  const [a, b, heat] = await Promise.all(["a", "b", "heatmap"].map((name) => getBlob(previewPath(comparison.id, name, level)).then(bitmapOf)));
  if (!a) return null;
  const aligned = comparison.result.alignment && comparison.result.alignment.applied;
  const { width, height } = manifest.levels[level];
  const note = `Big image: shown from ${width} × ${height} previews; zoom in for full-resolution tiles (the readout always reads A's and B's own pixels).${aligned ? ` ${ALIGNED_NOTE}` : ""}`;
  return { images: { a, b, heat }, note, tiled: { comparisonId: comparison.id, manifest } };
}

/**
 * What to paint first: the heatmap, plus the files picked in this tab when there are (A, and
 * B when it was not warped), so the result shows before the server's previews are rendered.
 */
async function firstImages(comparison, heat) {
  const local = localFiles(comparison.id);
  if (!local) return null;
  const aligned = comparison.result.alignment && comparison.result.alignment.applied;
  const [a, b] = await Promise.all([bitmapOf(local.a), aligned ? null : bitmapOf(local.b)]);
  if (!a || a.width !== comparison.result.width || a.height !== comparison.result.height) return null;
  return { images: { a, b, heat }, note: aligned ? "Loading B warped into A's frame…" : "" };
}

async function showResult(main, comparison, isAlive) {
  const result = comparison.result;
  const al = result.alignment || {};
  let stage = null;
  const headline = h(
    "header",
    { class: `headline verdict-${result.verdict}` },
    h("p", { class: "verdict", "data-role": "verdict" }, verdictWords(result.verdict)),
    h("p", { class: "summary", "data-role": "summary" }, result.summary),
  );
  const ssim = h("p", { class: "ssim", "data-role": "ssim", "aria-label": `SSIM ${percent(result.ssim)}` }, h("span", { class: "ssim-label" }, "SSIM "), percent(result.ssim));
  const scores = h(
    "dl",
    { class: "metrics" },
    metric("PSNR", result.psnr === null ? "∞ (identical)" : `${result.psnr.toFixed(2)} dB`, "psnr"),
    metric("Histogram similarity", percent(result.histogram_similarity), "histogram"),
    metric("Changed pixels", `${percent(result.changed_ratio, 2)} (${result.changed_pixels ?? "?"} px)`, "changed"),
    metric("Size (A)", `${result.width} × ${result.height} px`, "size"),
    metric("Mode", result.mode, "mode"),
    metric("Alignment", alignmentText(al), "alignment"),
    al.applied || al.inliers ? metric("Inliers", `${al.inliers ?? "?"}${al.inlier_ratio != null ? ` (${percent(al.inlier_ratio)})` : ""}`, "inliers") : null,
    al.overlap_ratio != null ? metric("Overlap", percent(al.overlap_ratio), "overlap") : null,
    al.method ? metric("Method", al.method, "method") : null,
  );
  const regions = result.regions || [];
  const regionList = h(
    "section",
    { class: "regions", "aria-label": "Changed regions" },
    h("h2", {}, `Regions (${regions.length})`),
    regions.length
      ? h(
          "ol",
          { "data-role": "regions" },
          regions.map((region, index) =>
            h(
              "li",
              {},
              h(
                "button",
                { type: "button", class: "region", onclick: () => stage && (stage.zoomToRegion(index), stage.element.querySelector("canvas").focus()) },
                `x ${region.x}, y ${region.y}, ${region.width} × ${region.height} px · mean ${percent(region.mean_diff)} · max ${percent(region.max_diff)}`,
              ),
            ),
          ),
        )
      : h("p", {}, "No changed region."),
  );
  const links = h(
    "p",
    { class: "links" },
    " ",
    h("a", { href: "/" }, "New comparison"),
  );
  const ignorePanel = ignoreSection(comparison, () => stage);
  const side = h("aside", { class: "side" }, ssim, scores, findingsList(result.findings), regionList, ignorePanel.element, links);
  const loading = h("p", { class: "muted" }, "Loading images…");
  const body = h("div", { class: "result" }, h("div", { class: "main-col" }, loading), side);
  main.append(headline);
  if (comparison.batch_id) main.append(await batchNav(comparison));
  main.append(body);
  const big = await bigPreviews(comparison);
  if (big) {
    if (!isAlive()) return null;
    stage = createStage(big.images, result, { bNote: big.note, tiled: big.tiled, ...ignorePanel.stageOptions });
    stage.element.dataset.images = "final";
    stage.element.dataset.tiled = "true";
    loading.replaceWith(stage.element);
    return stage;
  }
  const previews = serverPreviews(comparison);
  const heat = await getBlob(previewPath(comparison.id, "heatmap")).then(bitmapOf);
  const first = await firstImages(comparison, heat);
  if (!isAlive()) return null;
  if (first) {
    stage = createStage(first.images, result, { bNote: first.note, ...ignorePanel.stageOptions });
    previews.then(({ images, note }) => stage.setImages(images, note));
  } else {
    const { images, note } = await previews;
    if (!isAlive()) return null;
    stage = createStage({ heat, ...images }, result, { bNote: note, ...ignorePanel.stageOptions });
    stage.element.dataset.images = "final";
  }
  loading.replaceWith(stage.element);
  return stage;
}

const rectText = ([x, y, w, hgt]) => `x ${x}, y ${y}, ${w} × ${hgt} px`;

/**
 * The ignored areas: those of this comparison's options, plus the ones drawn on the image;
 * "Re-run" submits the same pair again with them (the API's `ignore`, in A's pixels).
 */
function ignoreSection(comparison, getStage) {
  const original = (comparison.options && comparison.options.ignore) || [];
  let rects = original.map((r) => [...r]);
  const list = h("ol", { "data-role": "ignore-list" });
  const error = h("p", { class: "error", role: "alert", "data-role": "ignore-error" });
  const rerun = h("button", { type: "button", class: "primary", onclick: () => submit() }, "Re-run with these areas ignored");
  const clear = h("button", { type: "button", onclick: () => update([]) }, "Clear");
  function update(next, fromStage = false) {
    rects = next;
    if (!fromStage && getStage()) getStage().setIgnore(rects);
    list.replaceChildren(
      ...rects.map((rect, index) =>
        h("li", {}, rectText(rect), " ", h("button", { type: "button", class: "ghost small", "aria-label": `Remove ignored area ${index + 1}`, onclick: () => update(rects.filter((_, i) => i !== index)) }, "Remove")),
      ),
    );
    const same = JSON.stringify(rects) === JSON.stringify(original);
    rerun.disabled = same;
    clear.disabled = !rects.length;
  }
  async function submit() {
    rerun.disabled = true;
    error.textContent = "";
    try {
      const options = { ...(comparison.options || {}), ignore: rects };
      const created = await postJson("/v1/comparisons", { a: comparison.a, b: comparison.b, options });
      navigate(`/c/${created.id}`);
    } catch (failure) {
      error.textContent = failure instanceof ApiError ? `${failure.detail} (${failure.code})` : String(failure);
      rerun.disabled = false;
    }
  }
  const element = h(
    "section",
    { class: "ignore", "aria-label": "Ignored areas" },
    h("h2", {}, "Ignored areas"),
    h("p", { class: "note" }, "Press “Draw ignore area” above the image, then drag a rectangle on it. Ignored areas count in no score and show grey."),
    list,
    h("div", { class: "row" }, rerun, clear),
    error,
  );
  update(rects);
  return { element, stageOptions: { ignore: rects, onIgnoreChange: (next) => update(next, true) } };
}
