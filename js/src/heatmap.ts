/** Canvas drawing of one panel with token labels. Draws; never computes a metric. */
import type { Panel } from "./codec";
import { colorOf } from "./colormaps";

export const PLOT_PX = 420; // side of the square plot area, CSS pixels
export const MARGIN_LEFT = 90;
export const MARGIN_TOP = 90;
const LABEL_PX = 11; // label font size; labels closer than this are thinned

/** Indices of labels to draw so that neighbours are at least LABEL_PX apart. */
export function thinLabels(count: number, cellPx: number): number[] {
  const step = Math.max(1, Math.ceil(LABEL_PX / Math.max(cellPx, 1e-9)));
  const out: number[] = [];
  for (let i = 0; i < count; i += step) out.push(i);
  return out;
}

/** RGBA pixels, one per cell, for a panel under a colormap. */
export function panelPixels(panel: Panel, lut: Uint8Array): Uint8ClampedArray<ArrayBuffer> {
  const px = new Uint8ClampedArray(panel.rows * panel.cols * 4);
  for (let i = 0; i < panel.levels.length; i++) {
    const [r, g, b] = colorOf(lut, panel.levels[i]);
    px[4 * i] = r; px[4 * i + 1] = g; px[4 * i + 2] = b; px[4 * i + 3] = 255;
  }
  return px;
}

function shorten(label: string, max = 12): string {
  return label.length > max ? label.slice(0, max - 1) + "…" : label;
}

export function drawHeatmap(
  canvas: HTMLCanvasElement, panel: Panel, lut: Uint8Array,
  queryTokens: string[], keyTokens: string[], textColor: string,
): void {
  const dpr = window.devicePixelRatio || 1;
  const width = MARGIN_LEFT + PLOT_PX + 8;
  const height = MARGIN_TOP + PLOT_PX + 8;
  canvas.width = Math.round(width * dpr);
  canvas.height = Math.round(height * dpr);
  canvas.style.width = `${width}px`;
  canvas.style.height = `${height}px`;
  const ctx = canvas.getContext("2d");
  if (!ctx) return;
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, width, height);

  const cell = Math.min(PLOT_PX / panel.cols, PLOT_PX / panel.rows);
  const image = new ImageData(panelPixels(panel, lut), panel.cols, panel.rows);
  const off = document.createElement("canvas");
  off.width = panel.cols; off.height = panel.rows;
  off.getContext("2d")?.putImageData(image, 0, 0);
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(off, MARGIN_LEFT, MARGIN_TOP, cell * panel.cols, cell * panel.rows);

  // token labels are user data: fillText draws them as text, nothing is parsed as HTML
  ctx.fillStyle = textColor;
  ctx.font = `${LABEL_PX - 1}px sans-serif`;
  ctx.textBaseline = "middle";
  ctx.textAlign = "right";
  for (const q of thinLabels(panel.rows, cell)) {
    ctx.fillText(shorten(queryTokens[q] ?? String(q)), MARGIN_LEFT - 4, MARGIN_TOP + (q + 0.5) * cell);
  }
  ctx.textAlign = "left";
  for (const k of thinLabels(panel.cols, cell)) {
    ctx.save();
    ctx.translate(MARGIN_LEFT + (k + 0.5) * cell, MARGIN_TOP - 4);
    ctx.rotate(-Math.PI / 2);
    ctx.fillText(shorten(keyTokens[k] ?? String(k)), 0, 0);
    ctx.restore();
  }
}
