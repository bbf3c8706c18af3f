// Small DOM and formatting helpers shared by the pages.

/** Create an element: h("div", {class: "x", onclick: fn}, child, "text", ...). */
export function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") node.addEventListener(name.slice(2), value);
    else if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export const $ = (selector, root = document) => root.querySelector(selector);

/** 0..1 as a percentage with one decimal: "97.3 %". */
export const percent = (value, digits = 1) =>
  value === null || value === undefined ? "n/a" : `${(value * 100).toFixed(digits)} %`;

export const bytes = (n) =>
  n < 1024 ? `${n} B` : n < 1048576 ? `${(n / 1024).toFixed(0)} kB` : `${(n / 1048576).toFixed(1)} MB`;

/** The verdicts in words. */
export const VERDICT_WORDS = {
  identical: "Identical",
  localized_edit: "Localised edit",
  global_change: "Global change",
  misaligned: "Misaligned",
  different: "Different image",
};

export const verdictWords = (verdict) => VERDICT_WORDS[verdict] || verdict || "";

/** Go to a page of the app without reloading. */
export function navigate(path) {
  history.pushState({}, "", path);
  window.dispatchEvent(new PopStateEvent("popstate"));
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
