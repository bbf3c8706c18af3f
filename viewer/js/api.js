// The public /v1 API, through the viewer's session cookie (HttpOnly, SameSite=Strict: this
// script never sees it). Signing in (a one-time link from `diffall serve`, or a pasted API key)
// exchanges the secret for the cookie at POST /v1/sessions; no key is kept in the page or in
// storage. State-changing calls send the session's CSRF token in X-CSRF-Token (kept in memory
// only, and fetched again from GET /v1/sessions/current after a reload). Images and heatmaps
// load through the same cookie (same-origin fetches), handed to the page as Blobs.

const CSRF_HEADER = "X-CSRF-Token";
let csrfToken = "";
let tenantName = "";
// Bumped at every sign-in and sign-out: a 401 to a request sent under an earlier session (a list
// asked for before the user signed in, answered after) must not sign the new session out.
let generation = 0;

/** An answer that was not 2xx: the problem+json body's detail and stable code. */
export class ApiError extends Error {
  constructor(status, code, detail, body) {
    super(detail || `HTTP ${status}`);
    this.status = status;
    this.code = code || "http_" + status;
    this.detail = detail || `HTTP ${status}`;
    this.body = body;
  }
}

/** The signed-in tenant's name, or "" when signed out. */
export const signedInAs = () => tenantName;

function remember(session) {
  csrfToken = (session && session.csrf_token) || "";
  tenantName = (session && session.tenant) || "";
  generation += 1;
}

/** A 401 to a request sent under the current session ends it and asks to sign in again. */
function unauthorized(error, sentUnder) {
  if (sentUnder !== generation) return; // answered for a session that is gone already
  remember(null);
  onUnauthorized(error);
}

let onUnauthorized = () => {};
/** Called with the error when the API answers 401 (the page asks to sign in). */
export function setUnauthorizedHandler(handler) {
  onUnauthorized = handler;
}

function headers(method = "GET", extra = {}) {
  const unsafe = !["GET", "HEAD", "OPTIONS"].includes(method);
  return unsafe && csrfToken ? { [CSRF_HEADER]: csrfToken, ...extra } : { ...extra };
}

async function problemFrom(response, sentUnder) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  const error = new ApiError(response.status, body && body.code, body && (body.detail || body.title), body);
  // The session ended (expired, signed out elsewhere, key revoked).
  if (response.status === 401) unauthorized(error, sentUnder);
  return error;
}

/** GET or send JSON; resolves to the parsed body (and the response, for headers). */
export async function request(method, path, body) {
  const init = { method, headers: headers(method), cache: "no-store", credentials: "same-origin" };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  const sentUnder = generation;
  const response = await fetch(path, init);
  if (!response.ok) throw await problemFrom(response, sentUnder);
  return { data: await response.json(), response };
}

export const getJson = async (path) => (await request("GET", path)).data;

async function sessionCall(method, body) {
  const init = { method, cache: "no-store", credentials: "same-origin", headers: headers(method) };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  const response = await fetch(method === "POST" ? "/v1/sessions" : "/v1/sessions/current", init);
  if (!response.ok) {
    let problem = null;
    try {
      problem = await response.json();
    } catch {
      problem = null;
    }
    throw new ApiError(response.status, problem && problem.code, problem && problem.detail, problem);
  }
  return response.status === 204 ? null : response.json();
}

/** Sign in with {signin_token} (the printed link's) or {api_key}; the server sets the cookie. */
export async function signIn(credentials) {
  remember(await sessionCall("POST", credentials));
  return tenantName;
}

/** Whether this browser has a live session (reads its CSRF token); never asks to sign in. */
export async function resumeSession() {
  try {
    remember(await sessionCall("GET"));
  } catch (error) {
    remember(null);
    if (error.status !== 401) throw error;
  }
  return tenantName;
}

/** End the session on the server and clear the cookie. */
export async function signOut() {
  try {
    await sessionCall("DELETE");
  } finally {
    remember(null);
  }
}
export const postJson = async (path, body) => (await request("POST", path, body)).data;

/** Fetch bytes (an image, a heatmap) with the key; null when the API answers 404. */
export async function getBlob(path) {
  const sentUnder = generation;
  const response = await fetch(path, { cache: "no-store", credentials: "same-origin" });
  if (response.status === 404) return null;
  if (!response.ok) throw await problemFrom(response, sentUnder);
  return response.blob();
}

/**
 * Upload one file to POST /v1/images with progress (XMLHttpRequest: fetch reports no upload
 * progress). onProgress gets 0..1. Resolves to the image resource, rejects with ApiError.
 */
export function uploadImage(file, onProgress) {
  return new Promise((resolve, reject) => {
    const sentUnder = generation;
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/v1/images");
    for (const [name, value] of Object.entries(headers("POST"))) xhr.setRequestHeader(name, value);
    xhr.upload.addEventListener("progress", (event) => {
      if (event.lengthComputable) onProgress(event.loaded / event.total);
    });
    xhr.addEventListener("load", () => {
      let body = null;
      try {
        body = JSON.parse(xhr.responseText);
      } catch {
        body = null;
      }
      if (xhr.status >= 200 && xhr.status < 300) {
        onProgress(1);
        resolve(body);
        return;
      }
      const error = new ApiError(xhr.status, body && body.code, body && (body.detail || body.title), body);
      if (xhr.status === 401) unauthorized(error, sentUnder);
      reject(error);
    });
    xhr.addEventListener("error", () => reject(new ApiError(0, "network_error", "the upload failed (network)")));
    const form = new FormData();
    form.append("file", file, file.name || "image");
    xhr.send(form);
  });
}

/**
 * The comparison's preview images on A's grid: "a" (A as decoded), "b" (B in A's frame) or
 * "heatmap"; at full resolution, or the downscaled preview when `level` is the manifest's
 * preview_level.
 */
export const previewPath = (comparisonId, name, level = null) =>
  `/v1/comparisons/${comparisonId}/previews/${name}${level === null ? "" : `?level=${level}`}`;
