// The heatmap's colour scale, as core/imaging/heatmap.py draws it: level L (0..254) of
// d = L / 255, interpolated in RGB between the breakpoints; index 255 is the neutral grey of
// pixels that were not compared. Used for the legend and to read a level back from a colour.

export const BREAKPOINTS = [
  [0.0, [0, 0, 255]],
  [0.05, [0, 255, 0]],
  [0.15, [255, 255, 0]],
  [0.3, [255, 0, 0]],
];
export const GREY = [128, 128, 128];
/** Anti-aliased pixels (rendering noise the engine does not count as changed): palette 254. */
export const ANTIALIAS = [255, 0, 255];
export const ANTIALIAS_BAND = { name: "magenta", words: "anti-aliasing (rendering noise, not counted as changed)" };

export function isAntialias(r, g, b) {
  return r === ANTIALIAS[0] && g === ANTIALIAS[1] && b === ANTIALIAS[2];
}

/** The bands, with the words shown in the legend and the hover readout. */
export const BANDS = [
  { upTo: 0, name: "blue", words: "identical" },
  { upTo: 0.05, name: "blue-green", words: "noise (re-compression, resampling)" },
  { upTo: 0.15, name: "green-yellow", words: "soft change (filter, colour shift)" },
  { upTo: 0.3, name: "yellow-red", words: "clear change" },
  { upTo: Infinity, name: "red", words: "content change" },
];

export function colourOf(d) {
  if (d >= BREAKPOINTS[BREAKPOINTS.length - 1][0]) return BREAKPOINTS[BREAKPOINTS.length - 1][1];
  for (let i = 1; i < BREAKPOINTS.length; i++) {
    const [d1, c1] = BREAKPOINTS[i];
    const [d0, c0] = BREAKPOINTS[i - 1];
    if (d <= d1) {
      const t = (d - d0) / (d1 - d0);
      return c0.map((v, k) => Math.round(v + (c1[k] - v) * t));
    }
  }
  return BREAKPOINTS[0][1];
}

let lookup = null;
/** The difference level (0..255) of a heatmap colour, or null for the grey "not compared". */
export function levelOf(r, g, b) {
  if (r === GREY[0] && g === GREY[1] && b === GREY[2]) return null;
  if (!lookup) {
    lookup = new Map();
    for (let level = 254; level >= 0; level--) {
      const [cr, cg, cb] = colourOf(level / 255);
      lookup.set((cr << 16) | (cg << 8) | cb, level);
    }
  }
  const exact = lookup.get((r << 16) | (g << 8) | b);
  if (exact !== undefined) return exact;
  let best = 0;
  let bestDistance = Infinity;
  for (const [key, level] of lookup) {
    const distance = Math.abs((key >> 16) - r) + Math.abs(((key >> 8) & 255) - g) + Math.abs((key & 255) - b);
    if (distance < bestDistance) [best, bestDistance] = [level, distance];
  }
  return best;
}

export function bandOf(d) {
  if (d === null) return { name: "grey", words: "not compared (outside the overlap, or ignored)" };
  return BANDS.find((band) => d <= band.upTo);
}
