// The viewer's entry point: the API key dialog and the router of the three addresses
// "/" (compare), "/c/{comparison_id}" (a result) and "/b/{batch_id}" (a batch).

import { getKey, getJson, setKey, setUnauthorizedHandler } from "./api.js";
import { renderBatch } from "./batch.js";
import { renderCompare } from "./compare.js";
import { $, navigate } from "./dom.js";
import { renderResult } from "./result.js";

const UUID = "[0-9a-fA-F-]{36}";
let current = null; // the page's teardown function

function askForKey(message = "") {
  const dialog = $("#key-dialog");
  $("#key-error").textContent = message;
  $("#key-input").value = "";
  if (!dialog.open) dialog.showModal();
  $("#key-input").focus();
}

function setUpKeyDialog() {
  const dialog = $("#key-dialog");
  $("#key-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const key = $("#key-input").value.trim();
    if (!key) return;
    setKey(key);
    try {
      await getJson("/v1/comparisons?limit=1"); // checks the key
    } catch (error) {
      setKey("");
      $("#key-error").textContent = `${error.detail} (${error.code})`;
      return;
    }
    dialog.close();
    updateKeyButton();
    route();
  });
  $("#key-forget").addEventListener("click", () => {
    setKey("");
    updateKeyButton();
    $("#key-error").textContent = "Key forgotten.";
  });
  $("#key-button").addEventListener("click", () => askForKey());
  setUnauthorizedHandler((error) => {
    setKey("");
    updateKeyButton();
    askForKey(`${error.detail} (${error.code})`);
  });
}

function updateKeyButton() {
  $("#key-button").textContent = getKey() ? "Signed in (change key)" : "Sign in";
}

function route() {
  if (current) current();
  current = null;
  const main = $("#main");
  main.replaceChildren();
  const path = location.pathname;
  const comparison = path.match(new RegExp(`^/c/(${UUID})$`));
  const batch = path.match(new RegExp(`^/b/(${UUID})$`));
  if (!getKey()) askForKey();
  if (comparison) current = renderResult(main, comparison[1]);
  else if (batch) current = renderBatch(main, batch[1]);
  else current = renderCompare(main);
}

document.addEventListener("click", (event) => {
  const link = event.target.closest && event.target.closest("a[href^='/']");
  if (!link || event.ctrlKey || event.metaKey || event.shiftKey || link.target) return;
  const href = link.getAttribute("href");
  if (href === "/" || /^\/[cb]\//.test(href)) {
    event.preventDefault();
    navigate(href);
  }
});
window.addEventListener("popstate", route);

setUpKeyDialog();
updateKeyButton();
route();
