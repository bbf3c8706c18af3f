// The viewer's entry point: signing in (the printed one-time link, or an API key in the
// dialog), signing out, and the router of the three addresses "/" (compare),
// "/c/{comparison_id}" (a result) and "/b/{batch_id}" (a batch).

import { resumeSession, setUnauthorizedHandler, signedInAs, signIn, signOut } from "./api.js";
import { renderBatch } from "./batch.js";
import { renderCompare } from "./compare.js";
import { $, navigate } from "./dom.js";
import { renderResult } from "./result.js";

const UUID = "[0-9a-fA-F-]{36}";
let current = null; // the page's teardown function

/** Open the sign-in dialog; a message replaces the one shown only when it says something. */
function askForKey(message = "") {
  const dialog = $("#key-dialog");
  if (message || !dialog.open) $("#key-error").textContent = message;
  if (dialog.open) return; // open already: keep what the user is typing
  $("#key-input").value = "";
  dialog.showModal();
  $("#key-input").focus();
}

function setUpKeyDialog() {
  const dialog = $("#key-dialog");
  $("#key-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const input = $("#key-input");
    const key = input.value.trim();
    if (!key) return;
    try {
      await signIn({ api_key: key });
    } catch (error) {
      $("#key-error").textContent = `${error.detail} (${error.code})`;
      return;
    } finally {
      input.value = ""; // the key leaves the page as soon as it was sent
    }
    dialog.close();
    updateSignedIn();
    route();
  });
  $("#key-cancel").addEventListener("click", () => dialog.close());
  $("#key-button").addEventListener("click", () => askForKey());
  $("#sign-out").addEventListener("click", async () => {
    try {
      await signOut();
    } finally {
      updateSignedIn();
      route();
    }
  });
  setUnauthorizedHandler((error) => {
    // Signed out already: the dialog is open (keep its message); otherwise the session ended.
    const ended = !$("#sign-out").hidden;
    updateSignedIn();
    askForKey(ended ? `Your session ended: sign in again. ${error.detail} (${error.code})` : "");
  });
}

function updateSignedIn() {
  const tenant = signedInAs();
  $("#signed-in").textContent = tenant ? `Signed in as ${tenant}` : "";
  $("#key-button").textContent = tenant ? "Change key" : "Sign in";
  $("#sign-out").hidden = !tenant;
}

function route() {
  if (current) current();
  current = null;
  const main = $("#main");
  main.replaceChildren();
  const path = location.pathname;
  const comparison = path.match(new RegExp(`^/c/(${UUID})$`));
  const batch = path.match(new RegExp(`^/b/(${UUID})$`));
  if (!signedInAs()) askForKey();
  if (comparison) current = renderResult(main, comparison[1]);
  else if (batch) current = renderBatch(main, batch[1]);
  else current = renderCompare(main);
}

/**
 * The printed link's one-time token ("#signin=dfs_..."): taken out of the address bar at once
 * (before it is even used, so it stays in no history entry), then exchanged for the cookie.
 */
async function start() {
  const match = location.hash.match(/^#signin=([A-Za-z0-9_-]+)$/);
  let problem = "";
  if (match) {
    history.replaceState(history.state, "", location.pathname + location.search);
    try {
      await signIn({ signin_token: match[1] });
    } catch (error) {
      problem = `${error.detail} (${error.code})`;
    }
  }
  if (!signedInAs()) {
    try {
      await resumeSession();
    } catch (error) {
      problem = problem || `${error.detail} (${error.code})`;
    }
  }
  updateSignedIn();
  route();
  if (problem && !signedInAs()) askForKey(problem);
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
start();
