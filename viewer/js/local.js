// The files the user picked for a comparison in this tab, kept in memory (never uploaded
// twice, never stored): the result page falls back to them when the server has no preview.

const files = new Map();

export function rememberLocalFiles(comparisonId, a, b) {
  files.set(comparisonId, { a, b });
}

/** The picked files of a comparison made in this tab, or null. */
export function localFiles(comparisonId) {
  return files.get(comparisonId) || null;
}
