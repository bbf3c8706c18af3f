// The batch page /b/{id}: progress while it runs, then every pair as a row (verdict, SSIM,
// changed ratio, or the failure's code), worst first, filterable by verdict; a row opens the pair.

import { ApiError, getBlob, getJson, previewPath } from "./api.js";
import { h, navigate, percent, sleep, verdictWords } from "./dom.js";

const PAGE = 100;

export async function allComparisons(batchId) {
  const items = [];
  let cursor = null;
  do {
    const query = new URLSearchParams({ limit: String(PAGE) });
    if (cursor) query.set("cursor", cursor);
    const page = await getJson(`/v1/batches/${batchId}/comparisons?${query}`);
    items.push(...page.items);
    cursor = page.next_cursor;
  } while (cursor);
  return items;
}

/** Failures first, then the lowest SSIM; unfinished last. */
export function worstFirst(a, b) {
  const rank = (c) => (c.state === "failed" ? 0 : c.state === "succeeded" ? 1 : 2);
  if (rank(a) !== rank(b)) return rank(a) - rank(b);
  return (a.result?.ssim ?? 2) - (b.result?.ssim ?? 2);
}

/** Thumbnail size of a row's heatmap, in CSS pixels (the long side). */
const THUMB = 72;
const thumbs = new Map(); // comparison id -> Promise of a small canvas (or null)

/** The heatmap, downscaled in the browser, drawn once per comparison. */
function heatmapThumb(id) {
  if (!thumbs.has(id)) {
    thumbs.set(
      id,
      getBlob(previewPath(id, "heatmap"))
        .then((blob) => (blob ? createImageBitmap(blob) : null))
        .then((bitmap) => {
          if (!bitmap) return null;
          const scale = THUMB / Math.max(bitmap.width, bitmap.height);
          const canvas = document.createElement("canvas");
          canvas.width = Math.max(1, Math.round(bitmap.width * scale));
          canvas.height = Math.max(1, Math.round(bitmap.height * scale));
          const context = canvas.getContext("2d");
          context.imageSmoothingQuality = "high";
          context.drawImage(bitmap, 0, 0, canvas.width, canvas.height);
          bitmap.close();
          return canvas;
        })
        .catch(() => null),
    );
  }
  return thumbs.get(id);
}

function thumbCell(c) {
  const cell = h("td", { class: "thumb" });
  if (c.state !== "succeeded") return cell;
  heatmapThumb(c.id).then((source) => {
    if (!source) return;
    const copy = h("canvas", { width: source.width, height: source.height, role: "img", "aria-label": "Heatmap thumbnail", "data-role": "thumb" });
    copy.getContext("2d").drawImage(source, 0, 0);
    cell.append(copy);
  });
  return cell;
}

export function renderBatch(main, batchId) {
  let alive = true;
  const title = h("h1", {}, "Batch");
  const progress = h("progress", { max: 1, value: 0, "aria-label": "Batch progress" });
  const counts = h("p", { class: "counts", role: "status", "data-role": "batch-counts" }, "Loading…");
  const filter = h("select", { id: "verdict-filter", "aria-label": "Filter by verdict" }, h("option", { value: "" }, "every pair"));
  const tbody = h("tbody", {});
  const table = h(
    "table",
    { class: "pairs", "data-role": "pairs" },
    h("thead", {}, h("tr", {}, ["#", "Heatmap", "State", "Verdict", "SSIM", "Changed", "Error"].map((t) => h("th", { scope: "col" }, t)))),
    tbody,
  );
  main.append(title, h("div", { class: "batch-head" }, progress, counts, h("label", { for: "verdict-filter" }, "Show "), filter), table);
  let rows = [];
  const draw = () => {
    const wanted = filter.value;
    tbody.replaceChildren(
      ...rows
        .filter((c) => !wanted || (wanted === "failed" ? c.state === "failed" : c.result?.verdict === wanted))
        .map((c, index) =>
          h(
            "tr",
            { class: `state-${c.state}`, tabindex: 0, "data-id": c.id, onclick: () => navigate(`/c/${c.id}`), onkeydown: (e) => e.key === "Enter" && navigate(`/c/${c.id}`) },
            h("td", {}, String(index + 1)),
            thumbCell(c),
            h("td", {}, c.state),
            h("td", {}, h("a", { href: `/c/${c.id}` }, c.result ? verdictWords(c.result.verdict) : c.state === "failed" ? "failed" : "…")),
            h("td", { class: "num" }, c.result ? percent(c.result.ssim) : ""),
            h("td", { class: "num" }, c.result ? percent(c.result.changed_ratio, 2) : ""),
            h("td", { class: "error-code" }, c.error ? `${c.error.code}: ${c.error.message}` : ""),
          ),
        ),
    );
  };
  filter.addEventListener("change", draw);
  (async () => {
    for (;;) {
      let batch;
      try {
        batch = await getJson(`/v1/batches/${batchId}`);
        rows = (await allComparisons(batchId)).sort(worstFirst);
      } catch (error) {
        counts.textContent = error instanceof ApiError ? `${error.detail} (${error.code})` : String(error);
        counts.classList.add("error");
        return;
      }
      if (!alive) return;
      title.textContent = `Batch of ${batch.total} pairs`;
      progress.value = batch.progress;
      const states = Object.entries(batch.counts).filter(([, n]) => n).map(([s, n]) => `${n} ${s}`);
      counts.textContent = `${percent(batch.progress, 0)} done: ${states.join(", ")}`;
      const verdicts = new Set(rows.map((c) => c.result?.verdict).filter(Boolean));
      const options = ["", ...verdicts, ...(rows.some((c) => c.state === "failed") ? ["failed"] : [])];
      if (filter.options.length !== options.length) {
        const keep = filter.value;
        filter.replaceChildren(...options.map((v) => h("option", { value: v }, v ? (v === "failed" ? "failed" : verdictWords(v)) : "every pair")));
        filter.value = keep;
      }
      draw();
      if (batch.progress >= 1 || batch.completed_at) return;
      await sleep(1000);
      if (!alive) return;
    }
  })();
  return () => {
    alive = false;
  };
}
