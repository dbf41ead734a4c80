/** The window of the full-resolution map a view shows: make, clamp, zoom. No drawing. */

/** A window of the full-resolution map, in cells (floats, end exclusive). */
export interface Viewport {
  q0: number;
  q1: number;
  k0: number;
  k1: number;
}

export function fullViewport(rows: number, cols: number): Viewport {
  return { q0: 0, q1: rows, k0: 0, k1: cols };
}

/** Keep a viewport inside [0, rows] x [0, cols], at least `minCells` cells wide, same size when moved. */
export function clampViewport(vp: Viewport, rows: number, cols: number, minCells = 4): Viewport {
  const fit = (a: number, b: number, size: number): [number, number] => {
    let span = Math.min(size, Math.max(Math.min(minCells, size), b - a));
    if (!(span > 0)) span = size;
    let start = Math.min(Math.max(0, a), size - span);
    if (!Number.isFinite(start)) start = 0;
    return [start, start + span];
  };
  const [q0, q1] = fit(vp.q0, vp.q1, rows);
  const [k0, k1] = fit(vp.k0, vp.k1, cols);
  return { q0, q1, k0, k1 };
}

/** Zoom by `factor` (> 1 zooms in) keeping the full-resolution point (q, k) under the cursor. */
export function zoomViewport(vp: Viewport, rows: number, cols: number, q: number, k: number, factor: number): Viewport {
  const scale = 1 / factor;
  return clampViewport({
    q0: q - (q - vp.q0) * scale, q1: q + (vp.q1 - q) * scale,
    k0: k - (k - vp.k0) * scale, k1: k + (vp.k1 - k) * scale,
  }, rows, cols);
}

export function isFull(vp: Viewport, rows: number, cols: number): boolean {
  return vp.q0 <= 0 && vp.k0 <= 0 && vp.q1 >= rows && vp.k1 >= cols;
}
