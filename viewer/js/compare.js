// The compare page: two drop zones (drag and drop, click to pick, paste), options, Compare.
// Each file is uploaded to POST /v1/images with progress, so a bad file's problem (detail and
// code) shows in its own zone; then POST /v1/comparisons by id, and on to /c/{id}.

import { ApiError, getJson, postJson, signedInAs, uploadImage } from "./api.js";
import { bytes, h, navigate, percent, verdictWords } from "./dom.js";
import { rememberLocalFiles } from "./local.js";

const SIDES = ["a", "b"];

function makeZone(side, state, onChange) {
  const label = `Image ${side.toUpperCase()}`;
  const input = h("input", { type: "file", accept: "image/*", "aria-label": label, class: "visually-hidden", id: `file-${side}` });
  const thumb = h("img", { class: "thumb", alt: "", hidden: true });
  const info = h("p", { class: "zone-info", "data-role": "info" }, side === "a" ? "The reference" : "The candidate");
  const bar = h("progress", { max: 1, value: 0, hidden: true, "aria-label": `${label} upload` });
  const error = h("p", { class: "error", role: "alert", "data-role": "error" });
  const zone = h(
    "div",
    { class: "zone", "data-side": side, tabindex: 0, role: "group", "aria-label": `${label} drop zone` },
    h("label", { for: `file-${side}`, class: "zone-title" }, label),
    h("p", { class: "hint" }, "Drop a file here, click to pick one, or paste (Ctrl+V)"),
    input,
    thumb,
    info,
    bar,
    error,
  );
  const set = (file) => {
    if (!file) return;
    const slot = state[side];
    if (slot.url) URL.revokeObjectURL(slot.url);
    slot.file = file;
    slot.imageId = null;
    slot.url = URL.createObjectURL(file);
    error.textContent = "";
    zone.classList.remove("bad");
    thumb.hidden = false;
    thumb.src = slot.url;
    info.textContent = `${file.name || "pasted image"} · ${bytes(file.size)}`;
    thumb.onload = () => {
      info.textContent = `${file.name || "pasted image"} · ${thumb.naturalWidth} × ${thumb.naturalHeight} px · ${bytes(file.size)}`;
    };
    thumb.onerror = () => {
      thumb.hidden = true;
      info.textContent = `${file.name || "pasted image"} · ${bytes(file.size)} (no preview in this browser)`;
    };
    onChange();
  };
  input.addEventListener("change", () => set(input.files[0]));
  zone.addEventListener("click", (event) => {
    if (event.target !== input && event.target.tagName !== "LABEL") input.click();
  });
  zone.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") {
      event.preventDefault();
      input.click();
    }
  });
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("over");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    set(event.dataTransfer.files[0]);
  });
  return {
    zone,
    set,
    progress(value) {
      bar.hidden = false;
      bar.value = value;
    },
    fail(problem) {
      zone.classList.add("bad");
      bar.hidden = true;
      error.textContent = `${problem.detail} (${problem.code})`;
    },
  };
}

export function renderCompare(main) {
  const state = { a: {}, b: {} };
  const button = h("button", { type: "submit", class: "primary", disabled: true }, "Compare");
  const refresh = () => {
    button.disabled = !(state.a.file && state.b.file);
  };
  const zones = Object.fromEntries(SIDES.map((side) => [side, makeZone(side, state, refresh)]));
  const mode = h(
    "select",
    { id: "mode", name: "mode" },
    h("option", { value: "auto" }, "auto: align only when it helps"),
    h("option", { value: "pixel" }, "pixel: never align"),
    h("option", { value: "align" }, "align: always align B onto A"),
  );
  const tolerance = h("input", { id: "tolerance", name: "tolerance", type: "number", min: 0, max: 1, step: 0.01, value: 0.1 });
  const status = h("p", { class: "status", role: "status", "data-role": "submit-status" });
  const form = h(
    "form",
    { class: "compare", "aria-label": "Compare two images" },
    h("div", { class: "zones" }, zones.a.zone, zones.b.zone),
    h(
      "div",
      { class: "options" },
      h("label", { for: "mode" }, "Mode"),
      mode,
      h("label", { for: "tolerance" }, "Tolerance"),
      tolerance,
      h("span", { class: "hint" }, "fraction of the range; 0.1 = 25.5 of 255 levels"),
      button,
    ),
    status,
  );
  const onPaste = (event) => {
    const file = [...(event.clipboardData?.files || [])][0];
    if (!file) return;
    const focused = document.activeElement?.closest?.(".zone")?.dataset.side;
    const side = focused || (!state.a.file ? "a" : !state.b.file ? "b" : "b");
    zones[side].set(file);
  };
  document.addEventListener("paste", onPaste);

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    button.disabled = true;
    status.textContent = "Uploading…";
    const results = await Promise.allSettled(
      SIDES.map(async (side) => {
        if (state[side].imageId) return state[side].imageId;
        try {
          const image = await uploadImage(state[side].file, (value) => zones[side].progress(value));
          state[side].imageId = image.id;
          return image.id;
        } catch (error) {
          zones[side].fail(error instanceof ApiError ? error : new ApiError(0, "upload_failed", String(error)));
          throw error;
        }
      }),
    );
    if (results.some((r) => r.status === "rejected")) {
      status.textContent = "An image was refused: see its zone.";
      refresh();
      return;
    }
    const options = { mode: mode.value };
    const tol = Number(tolerance.value);
    if (tolerance.value !== "" && Number.isFinite(tol)) options.tolerance = tol;
    try {
      status.textContent = "Queuing the comparison…";
      const job = await postJson("/v1/comparisons", { a: state.a.imageId, b: state.b.imageId, options });
      rememberLocalFiles(job.id, state.a.file, state.b.file);
      navigate(`/c/${job.id}`);
    } catch (error) {
      status.textContent = `${error.detail} (${error.code})`;
      status.classList.add("error");
      refresh();
    }
  });

  const recent = h("section", { class: "recent", "aria-label": "Recent comparisons" });
  main.append(h("h1", {}, "Compare two images"), form, recent);
  if (signedInAs()) loadRecent(recent); // signed out: the page asks to sign in first
  return () => document.removeEventListener("paste", onPaste);
}

/** Recent batches: those of the latest 100 comparisons (the API lists comparisons, not batches). */
async function recentBatches(items) {
  const ids = [...new Set(items.map((item) => item.batch_id).filter(Boolean))].slice(0, 5);
  const batches = await Promise.all(ids.map((id) => getJson(`/v1/batches/${id}`).catch(() => null)));
  const known = batches.filter(Boolean);
  if (!known.length) return null;
  return h(
    "section",
    { "aria-label": "Recent batches" },
    h("h2", {}, "Recent batches"),
    h(
      "ul",
      { class: "recent-list", "data-role": "recent-batches" },
      known.map((batch) =>
        h(
          "li",
          {},
          h("a", { href: `/b/${batch.id}` }, `Batch of ${batch.total} pairs`),
          ` · ${percent(batch.progress, 0)} done`,
          h("span", { class: "muted" }, ` · ${new Date(batch.created_at).toLocaleString()}`),
        ),
      ),
    ),
  );
}

async function loadRecent(section) {
  let page;
  try {
    page = await getJson("/v1/comparisons?limit=100");
  } catch {
    return;
  }
  if (!page.items.length) return;
  const batches = await recentBatches(page.items).catch(() => null);
  if (batches) section.append(batches);
  page.items = page.items.slice(0, 10);
  section.append(
    h("h2", {}, "Recent comparisons"),
    h(
      "ul",
      { class: "recent-list", "data-role": "recent-comparisons" },
      page.items.map((item) =>
        h(
          "li",
          {},
          h("a", { href: `/c/${item.id}` }, item.result ? verdictWords(item.result.verdict) : item.state),
          item.result ? ` · SSIM ${percent(item.result.ssim)}` : "",
          item.error ? ` · ${item.error.code}` : "",
          item.batch_id ? h("span", {}, " · ", h("a", { href: `/b/${item.batch_id}` }, "batch")) : "",
          h("span", { class: "muted" }, ` · ${new Date(item.created_at).toLocaleString()}`),
        ),
      ),
    ),
  );
}
