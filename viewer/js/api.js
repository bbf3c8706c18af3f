// The public /v1 API, with the API key kept in this tab's sessionStorage.
// Every call sends `Authorization: Bearer <key>`; images and heatmaps are fetched the same way
// and handed to the page as Blobs (a plain <img src> would get 401).

const KEY_STORAGE = "diffall.apiKey";

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

export function getKey() {
  return sessionStorage.getItem(KEY_STORAGE) || "";
}

export function setKey(key) {
  if (key) sessionStorage.setItem(KEY_STORAGE, key.trim());
  else sessionStorage.removeItem(KEY_STORAGE);
}

let onUnauthorized = () => {};
/** Called with the error when the API answers 401 (the page asks for a key). */
export function setUnauthorizedHandler(handler) {
  onUnauthorized = handler;
}

function headers(extra = {}) {
  const key = getKey();
  return key ? { Authorization: `Bearer ${key}`, ...extra } : { ...extra };
}

async function problemFrom(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  const error = new ApiError(response.status, body && body.code, body && (body.detail || body.title), body);
  if (response.status === 401) onUnauthorized(error);
  return error;
}

/** GET or send JSON; resolves to the parsed body (and the response, for headers). */
export async function request(method, path, body) {
  const init = { method, headers: headers(), cache: "no-store" };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  const response = await fetch(path, init);
  if (!response.ok) throw await problemFrom(response);
  return { data: await response.json(), response };
}

export const getJson = async (path) => (await request("GET", path)).data;
export const postJson = async (path, body) => (await request("POST", path, body)).data;

/** Fetch bytes (an image, a heatmap) with the key; null when the API answers 404. */
export async function getBlob(path) {
  const response = await fetch(path, { headers: headers(), cache: "no-store" });
  if (response.status === 404) return null;
  if (!response.ok) throw await problemFrom(response);
  return response.blob();
}

/**
 * Upload one file to POST /v1/images with progress (XMLHttpRequest: fetch reports no upload
 * progress). onProgress gets 0..1. Resolves to the image resource, rejects with ApiError.
 */
export function uploadImage(file, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/v1/images");
    for (const [name, value] of Object.entries(headers())) xhr.setRequestHeader(name, value);
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
      if (xhr.status === 401) onUnauthorized(error);
      reject(error);
    });
    xhr.addEventListener("error", () => reject(new ApiError(0, "network_error", "the upload failed (network)")));
    const form = new FormData();
    form.append("file", file, file.name || "image");
    xhr.send(form);
  });
}

/** The comparison's preview images on A's grid: "a" (A as decoded) and "b" (B in A's frame). */
export const previewPath = (comparisonId, name) => `/v1/comparisons/${comparisonId}/previews/${name}`;
