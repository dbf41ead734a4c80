/** Canvas drawing of one attention map: cells, token axes, colour bar, the selected query.
 *  Draws; never computes a metric. The head grid, thumbnails and row profile: heads.ts. */
import { LEVELS, type Panel } from "./codec";
import { colorOf } from "./colormaps";

export const PLOT_PX = 512; // side of the square plot area, CSS pixels
export const MARGIN_LEFT = 96;
export const MARGIN_TOP = 96;
const BAR_GAP = 14;
const BAR_W = 12;
const BAR_LABELS = 52;
const LABEL_PX = 11; // label font size; labels closer than this are thinned
/** Share of a dimmed cell's colour that is kept (the rest is the background). */
export const DIM_KEEP = 0.18;

export interface Theme {
  text: string;
  background: [number, number, number];
  masked: string;
  accent: string;
}

// the viewport helpers live in their own module; the map's users import them from here too
export { clampViewport, fullViewport, isFull, type Viewport, zoomViewport } from "./viewport";
import type { Viewport } from "./viewport";

/** Where the plot sits on the canvas and how big a full-resolution cell is. */
export interface Layout {
  vp: Viewport;
  cell: number;
  width: number;
  height: number;
}

export function layoutOf(vp: Viewport, side = PLOT_PX): Layout {
  const cell = Math.min(side / (vp.k1 - vp.k0), side / (vp.q1 - vp.q0));
  return { vp, cell, width: cell * (vp.k1 - vp.k0), height: cell * (vp.q1 - vp.q0) };
}

/** Full-resolution cell under canvas point (x, y) in CSS pixels, or null outside the plot. */
export function cellAt(layout: Layout, x: number, y: number): { q: number; k: number } | null {
  const px = x - MARGIN_LEFT;
  const py = y - MARGIN_TOP;
  if (px < 0 || py < 0 || px >= layout.width || py >= layout.height) return null;
  return { q: Math.floor(layout.vp.q0 + py / layout.cell), k: Math.floor(layout.vp.k0 + px / layout.cell) };
}

/** Indices in [start, end) of labels to draw so that neighbours are at least LABEL_PX apart. */
export function thinLabels(count: number, cellPx: number, start = 0): number[] {
  const step = Math.max(1, Math.ceil(LABEL_PX / Math.max(cellPx, 1e-9)));
  const out: number[] = [];
  const first = Math.ceil(start / step) * step; // stable positions while panning
  for (let i = first; i < count; i += step) out.push(i);
  return out;
}

/**
 * The level below which cells are dimmed for a threshold. A cell is dimmed when
 * its level is below threshold / vmax * 254 (sqrt(threshold / vmax) * 254 on the square-root
 * scale): exact up to the uint8 quantisation; the metrics are computed in Python on the exact weights.
 */
export function thresholdLevel(threshold: number, vmax: number, sqrt = false): number {
  return scalePosition(threshold, vmax, sqrt) * LEVELS;
}

/** Where weight `v` sits on a colour scale of 0..vmax, 0..1 (not clipped); `sqrt`: the square-root scale. */
export function scalePosition(v: number, vmax: number, sqrt = false): number {
  return sqrt ? Math.sqrt(Math.max(v, 0) / vmax) : v / vmax;
}

/** The weight a level stands for (the inverse of the quantisation, up to half a level). */
export function weightOfLevel(level: number, vmax: number, sqrt = false): number {
  const f = level / LEVELS;
  return (sqrt ? f * f : f) * vmax;
}

/** 0 and up to `most` round weights (1, 2 or 5 times a power of ten) up to `high`, near
 *  i / most of the way up a square-root scale: its colour bar's ticks (as attnwidget/plots/_matrix.py). */
export function sqrtTicks(high: number, most: number): number[] {
  if (!(Number.isFinite(high) && high > 0)) return [0];
  const top = Math.floor(Math.log10(high));
  const rounds: number[] = [];
  for (let e = top - 8; e <= top; e++) for (const m of [1, 2, 5]) if (m * 10 ** e <= high) rounds.push(m * 10 ** e);
  const marks = [0];
  for (let i = 1; i <= most; i++) {
    const aim = (Math.sqrt(high) * i) / most;
    let best = rounds[0];
    for (const v of rounds) if (Math.abs(Math.sqrt(v) - aim) < Math.abs(Math.sqrt(best) - aim)) best = v;
    if (best > marks[marks.length - 1]) marks.push(best);
  }
  return marks;
}

/**
 * RGBA for each of the 256 levels under a colormap and threshold: the colour,
 * blended toward the background below the threshold, transparent for MASKED.
 * Painting is then one table lookup per cell.
 */
export function levelPalette(lut: Uint8Array, dimBelow = 0, background: [number, number, number] = [255, 255, 255]): Uint8ClampedArray {
  const pal = new Uint8ClampedArray(256 * 4);
  const keep = DIM_KEEP;
  const [br, bg, bb] = background;
  for (let level = 0; level <= LEVELS; level++) {
    let [r, g, b] = colorOf(lut, (level * 255) / LEVELS);
    if (level < dimBelow) {
      r = r * keep + br * (1 - keep);
      g = g * keep + bg * (1 - keep);
      b = b * keep + bb * (1 - keep);
    }
    pal.set([r, g, b, 255], 4 * level);
  }
  // MASKED stays (0, 0, 0, 0): the masked hatch underneath shows through
  return pal;
}

/** RGBA pixels, one per cell: colormap colour, dimmed below the threshold, transparent if masked. */
export function panelPixels(
  panel: Pick<Panel, "rows" | "cols" | "levels">, lut: Uint8Array,
  dimBelow = 0, background: [number, number, number] = [255, 255, 255],
  into?: Uint8ClampedArray<ArrayBuffer>,
): Uint8ClampedArray<ArrayBuffer> {
  const px = into ?? new Uint8ClampedArray(panel.rows * panel.cols * 4);
  // 32-bit words: one read and one write per cell (byte order is the platform's for both)
  const pal32 = new Uint32Array(levelPalette(lut, dimBelow, background).buffer);
  const out32 = new Uint32Array(px.buffer);
  const levels = panel.levels;
  for (let i = 0; i < levels.length; i++) out32[i] = pal32[levels[i]];
  return px;
}

function shorten(label: string, max = 12): string {
  // one line: newlines and tabs in a token would break the axis
  const flat = label.replace(/[\r\n\t]/g, " ");
  return flat.length > max ? flat.slice(0, max - 1) + "…" : flat;
}

/** Drawing units (CSS pixels as drawn) per CSS pixel as shown: above 1 when CSS shows the canvas
 *  narrower than it was drawn. */
export function drawnScale(canvas: HTMLCanvasElement, shownWidth = canvas.getBoundingClientRect().width): number {
  const drawn = parseFloat(canvas.style.width);
  return shownWidth > 0 && drawn > 0 ? drawn / shownWidth : 1;
}

export function sizeCanvas(canvas: HTMLCanvasElement, width: number, height: number): CanvasRenderingContext2D | null {
  const dpr = window.devicePixelRatio || 1;
  const w = Math.round(width * dpr);
  const h = Math.round(height * dpr);
  if (canvas.width !== w) canvas.width = w;
  if (canvas.height !== h) canvas.height = h;
  canvas.style.width = `${width}px`;
  // height from the canvas's own aspect: a map shown narrower than drawn (max-width in a narrow
  // output) keeps its shape; pointer positions are scaled back by drawnScale
  canvas.style.height = "auto";
  const ctx = canvas.getContext("2d");
  if (!ctx) return null;
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, width, height);
  return ctx;
}

// one hatch tile per colour, made once: a threshold drag repaints many times a second
const hatchTiles = new Map<string, HTMLCanvasElement>();

export function hatch(ctx: CanvasRenderingContext2D, colour: string): CanvasPattern | string {
  const cached = hatchTiles.get(colour);
  if (cached) return ctx.createPattern(cached, "repeat") ?? colour;
  const tile = document.createElement("canvas");
  tile.width = 6; tile.height = 6;
  const t = tile.getContext("2d");
  if (!t) return colour;
  t.strokeStyle = colour;
  t.lineWidth = 1;
  t.beginPath();
  t.moveTo(0, 6); t.lineTo(6, 0);
  t.stroke();
  hatchTiles.set(colour, tile);
  return ctx.createPattern(tile, "repeat") ?? colour;
}

// offscreen canvases reused across paints, one per target canvas and role (overview, detail
// window): each view owns its own, and they go with the canvas they draw into
const scratchCanvases = new WeakMap<HTMLCanvasElement, Map<string, HTMLCanvasElement>>();
const pixelBuffers = new WeakMap<HTMLCanvasElement, ImageData>();

/** The panel's levels as an image (one pixel a cell); `owner` and `role` pick a reused one. */
export function imageOf(
  panel: Pick<Panel, "rows" | "cols" | "levels">, lut: Uint8Array, dimBelow: number,
  bg: [number, number, number], owner?: HTMLCanvasElement, role = "",
): HTMLCanvasElement {
  let roles = owner ? scratchCanvases.get(owner) : undefined;
  if (owner && !roles) scratchCanvases.set(owner, (roles = new Map()));
  let off = roles?.get(role);
  if (!off) {
    off = document.createElement("canvas");
    roles?.set(role, off);
  }
  if (off.width !== panel.cols) off.width = panel.cols;
  if (off.height !== panel.rows) off.height = panel.rows;
  // the pixel buffer is reused with its canvas while the size stays (a 512 x 512 map is 1 MiB)
  let img = pixelBuffers.get(off);
  if (!img || img.width !== panel.cols || img.height !== panel.rows) {
    img = new ImageData(panel.cols, panel.rows);
    pixelBuffers.set(off, img);
  }
  panelPixels(panel, lut, dimBelow, bg, img.data);
  off.getContext("2d")?.putImageData(img, 0, 0);
  return off;
}

/** Draw the part of `panel` that falls in the viewport (panel cells cover `pool` full cells each). */
function blit(ctx: CanvasRenderingContext2D, image: HTMLCanvasElement, panel: Panel, layout: Layout): void {
  const { vp, cell } = layout;
  const p = panel.pool;
  // the panel's extent in full-resolution cells, intersected with the viewport
  const q0 = Math.max(vp.q0, panel.originRow);
  const k0 = Math.max(vp.k0, panel.originCol);
  const q1 = Math.min(vp.q1, panel.originRow + panel.rows * p, panel.fullRows);
  const k1 = Math.min(vp.k1, panel.originCol + panel.cols * p, panel.fullCols);
  if (q1 <= q0 || k1 <= k0) return;
  ctx.drawImage(
    image,
    (k0 - panel.originCol) / p, (q0 - panel.originRow) / p, (k1 - k0) / p, (q1 - q0) / p,
    MARGIN_LEFT + (k0 - vp.k0) * cell, MARGIN_TOP + (q0 - vp.q0) * cell, (k1 - k0) * cell, (q1 - q0) * cell,
  );
}

export interface HeatmapInput {
  panel: Panel;
  /** A full-resolution window (zoom), drawn over the overview where it applies. */
  detail: Panel | null;
  viewport: Viewport;
  lut: Uint8Array;
  /** Cells below this weight are dimmed (0: none). */
  threshold: number;
  /** The threshold to mark on the colour bar (default `threshold`); dashed while nothing is dimmed. */
  mark?: number;
  queryTokens: string[];
  keyTokens: string[];
  query: number | null;
  theme: Theme;
  /** Side of the plot area in CSS pixels (default PLOT_PX). */
  side?: number;
  /** Colour bar range; default [0, vmax]. A difference map passes [-span, span]. */
  barRange?: [number, number];
}

/** A weight read off the map (hover, the threshold mark): three decimals, or exponent form under 0.01. */
export function formatWeight(v: number): string {
  return v === 0 ? "0" : v >= 0.01 ? v.toFixed(3) : v.toExponential(2);
}

/** A colour bar tick: up to three significant digits, in decimals down to 0.001 (0.002 under 0.01, not 2.00e-3). */
export function formatTick(v: number): string {
  return v === 0 ? "0" : v >= 1e-3 ? String(Number(v.toPrecision(3))) : v.toExponential(1);
}

/** Draw one map with its token axes, colour bar and the selected query; returns the layout for hit tests. */
export function drawHeatmap(canvas: HTMLCanvasElement, input: HeatmapInput): Layout {
  const { panel, detail, viewport, lut, theme } = input;
  const side = input.side ?? PLOT_PX;
  const layout = layoutOf(viewport, side);
  const width = MARGIN_LEFT + side + BAR_GAP + BAR_W + BAR_LABELS;
  const height = MARGIN_TOP + side + 8;
  const ctx = sizeCanvas(canvas, width, height);
  if (!ctx) return layout;

  // masked cells are transparent in the image: the hatch marks them, unlike a weight of 0
  ctx.fillStyle = hatch(ctx, theme.masked);
  ctx.fillRect(MARGIN_LEFT, MARGIN_TOP, layout.width, layout.height);
  ctx.imageSmoothingEnabled = false;
  const dim = thresholdLevel(input.threshold, panel.vmax, panel.sqrt);
  blit(ctx, imageOf(panel, lut, dim, theme.background, canvas, "panel"), panel, layout);
  if (detail) {
    const detailDim = thresholdLevel(input.threshold, detail.vmax, detail.sqrt);
    blit(ctx, imageOf(detail, lut, detailDim, theme.background, canvas, "detail"), detail, layout);
  }

  const { vp, cell } = layout;
  if (input.query !== null && input.query >= vp.q0 && input.query < vp.q1) {
    ctx.strokeStyle = theme.accent;
    ctx.lineWidth = 2;
    ctx.strokeRect(MARGIN_LEFT - 1, MARGIN_TOP + (input.query - vp.q0) * cell, layout.width + 2, Math.max(cell, 2));
  }

  // token labels are user data: fillText draws them as text, nothing is parsed as HTML
  ctx.fillStyle = theme.text;
  ctx.font = `${LABEL_PX - 1}px sans-serif`;
  ctx.textBaseline = "middle";
  ctx.textAlign = "right";
  const qStart = Math.floor(vp.q0);
  for (const q of thinLabels(Math.ceil(vp.q1), cell, qStart)) {
    ctx.fillText(shorten(input.queryTokens[q] ?? String(q)), MARGIN_LEFT - 4, MARGIN_TOP + (q + 0.5 - vp.q0) * cell);
  }
  ctx.textAlign = "left";
  const kStart = Math.floor(vp.k0);
  for (const k of thinLabels(Math.ceil(vp.k1), cell, kStart)) {
    ctx.save();
    ctx.translate(MARGIN_LEFT + (k + 0.5 - vp.k0) * cell, MARGIN_TOP - 4);
    ctx.rotate(-Math.PI / 2);
    ctx.fillText(shorten(input.keyTokens[k] ?? String(k)), 0, 0);
    ctx.restore();
  }
  drawColourBar(ctx, lut, input.barRange ?? [0, panel.vmax], input.mark ?? input.threshold, input.threshold > 0,
    layout.height, theme, side, panel.sqrt && !input.barRange);
  return layout;
}

// the colour bar's gradient, drawn once per colormap and height (every paint drew 256 rects,
// each with a CSS colour string to parse)
const barImages = new WeakMap<Uint8Array, Map<string, HTMLCanvasElement>>();

function barImage(lut: Uint8Array, h: number): HTMLCanvasElement {
  const dpr = window.devicePixelRatio || 1;
  const key = `${h}@${dpr}`;
  let sizes = barImages.get(lut);
  if (!sizes) barImages.set(lut, (sizes = new Map()));
  const cached = sizes.get(key);
  if (cached) return cached;
  const img = document.createElement("canvas");
  img.width = Math.round(BAR_W * dpr);
  img.height = Math.round(h * dpr);
  const c = img.getContext("2d");
  if (c) {
    c.scale(dpr, dpr);
    for (let i = 0; i < 256; i++) {
      const [r, g, b] = colorOf(lut, i);
      c.fillStyle = `rgb(${r},${g},${b})`;
      c.fillRect(0, h - ((i + 1) / 256) * h, BAR_W, h / 256 + 0.5);
    }
  }
  sizes.set(key, img);
  return img;
}

/** The colour bar with its range and the threshold mark. A threshold above the range (a long
 *  text's weights are all small) is marked at the top with its value, so it is never hidden. */
function drawColourBar(
  ctx: CanvasRenderingContext2D, lut: Uint8Array, range: [number, number], threshold: number, dimming: boolean,
  height: number, theme: Theme, side: number, sqrt = false,
): void {
  const [lo, hi] = range;
  const vmax = hi;
  const x = MARGIN_LEFT + side + BAR_GAP;
  const h = Math.max(height, 60);
  ctx.drawImage(barImage(lut, h), x, MARGIN_TOP, BAR_W, h);
  ctx.fillStyle = theme.text;
  ctx.font = "10px sans-serif";
  ctx.textAlign = "left";
  ctx.textBaseline = "middle";
  const label = (v: number) => (v < 0 ? "−" + formatTick(-v) : formatTick(v));
  const marked = lo === 0 && threshold > 0;
  const markY = MARGIN_TOP + h - Math.min(scalePosition(threshold, vmax, sqrt), 1) * h;
  const inside = marked && threshold <= vmax;
  // a tick label where the threshold's own value is written would be drawn over by it
  const tick = (text: string, y: number) => { if (!inside || Math.abs(y - markY) >= 11) ctx.fillText(text, x + BAR_W + 3, y); };
  if (sqrt) { // round weights, each where the square-root scale puts it
    for (const v of sqrtTicks(hi, 4)) tick(label(v), MARGIN_TOP + h - scalePosition(v, hi, true) * h);
  } else {
    for (const f of [0, 0.5, 1]) tick(label(lo + f * (hi - lo)), MARGIN_TOP + h - f * h);
  }
  if (marked) {
    const y = markY;
    ctx.setLineDash(dimming ? [] : [3, 2]);
    // the accent line on a wider line of the text colour: visible on every colour of every map
    ctx.strokeStyle = theme.text;
    ctx.lineWidth = 4;
    ctx.beginPath(); ctx.moveTo(x - 3, y); ctx.lineTo(x + BAR_W + 2, y); ctx.stroke();
    ctx.strokeStyle = ctx.fillStyle = theme.accent;
    ctx.lineWidth = 2;
    ctx.beginPath(); ctx.moveTo(x - 3, y); ctx.lineTo(x + BAR_W + 2, y); ctx.stroke();
    ctx.setLineDash([]);
    if (inside) { // its value beside it, where the user reads the bar's numbers
      ctx.fillText(`◂ ${formatWeight(threshold)}`, x + BAR_W + 3, y);
    } else { // an arrow above the bar, and the value: the threshold is off the scale
      ctx.beginPath(); ctx.moveTo(x - 1, y - 3); ctx.lineTo(x + BAR_W / 2, y - 9); ctx.lineTo(x + BAR_W + 1, y - 3); ctx.fill();
      ctx.fillText(`▲ ${formatWeight(threshold)}`, x - 4, MARGIN_TOP - 30);
    }
    ctx.fillStyle = theme.text;
  }
  // the title well above the top value, which is drawn centred on the bar's top edge
  ctx.fillText(sqrt ? "weight (√)" : "weight", x - 4, MARGIN_TOP - 16);
}
