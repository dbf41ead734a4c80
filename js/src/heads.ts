/** Canvas drawing of a layer's heads (the grid view, the thumbnails of the head strip) and of the
 *  selected query's row profile. Draws; never computes a metric. */
import { type Atlas, atlasPanel } from "./codec";
import { formatWeight, hatch, imageOf, PLOT_PX, sizeCanvas, type Theme } from "./heatmap";

/** Cells of the head grid: position of each head's thumbnail on the canvas. */
export interface GridLayout {
  cols: number;
  size: number;
  boxes: { head: number; x: number; y: number }[];
}

/** Height of the label line above the grid's first row of heads, CSS pixels. */
export const GRID_LABEL_PX = 14;

export function gridLayout(heads: number, side = PLOT_PX, labelPx = GRID_LABEL_PX): GridLayout {
  const cols = Math.ceil(Math.sqrt(heads));
  const size = Math.floor(side / cols);
  const boxes = [];
  for (let h = 0; h < heads; h++) {
    boxes.push({ head: h, x: (h % cols) * size, y: Math.floor(h / cols) * size + labelPx });
  }
  return { cols, size, boxes };
}

/** The head whose grid cell (its thumbnail and the label under it) holds (x, y), or null; the
 *  line above the grid belongs to no head. */
export function headAt(grid: GridLayout, x: number, y: number): number | null {
  const hit = grid.boxes.find((b) => x >= b.x && x < b.x + grid.size && y >= b.y && y < b.y + grid.size);
  return hit ? hit.head : null;
}

/** The first of `labels` (longest first) that is at most `width` wide by `measure`; else the last,
 *  which the caller clips to its box. A grid cell's label must not run into its neighbour's. */
export function fitLabel(labels: string[], width: number, measure: (text: string) => number): string {
  return labels.find((t) => measure(t) <= width) ?? labels[labels.length - 1];
}

/** The line above the grid: what its colours and its "H" mean. */
export const GRID_HEADER = "each head on its own scale, 0 to its largest weight · H: mean row entropy (nats)";

/** All heads of a layer as a grid in the main canvas, under a line that says how to read it; the
 *  selected head is outlined. */
export function drawGrid(canvas: HTMLCanvasElement, atlas: Atlas, lut: Uint8Array, selected: number, theme: Theme): GridLayout {
  const grid = gridLayout(atlas.heads);
  const rowsUsed = Math.ceil(atlas.heads / grid.cols);
  const ctx = sizeCanvas(canvas, grid.cols * grid.size, rowsUsed * grid.size + GRID_LABEL_PX);
  if (!ctx) return grid;
  ctx.imageSmoothingEnabled = false;
  ctx.font = "11px sans-serif";
  ctx.textBaseline = "bottom";
  ctx.fillStyle = theme.text;
  ctx.fillText(fitLabel([GRID_HEADER, "own scale per head · H: entropy (nats)"], grid.cols * grid.size - 4,
    (t) => ctx.measureText(t).width), 2, GRID_LABEL_PX - 2);
  for (const box of grid.boxes) {
    const inner = grid.size - 18;
    const thumb = atlasPanel(atlas, box.head);
    ctx.fillStyle = hatch(ctx, theme.masked);
    ctx.fillRect(box.x + 2, box.y + 2, inner, inner);
    ctx.drawImage(imageOf(thumb, lut, 0, theme.background, canvas, "thumb"), box.x + 2, box.y + 2, inner, inner);
    const badge = atlas.badges[box.head];
    ctx.fillStyle = theme.text;
    const name = badge?.name ?? String(box.head);
    const labels = badge ? [`${name} · ${badge.grade} · H ${badge.entropy.toFixed(2)}`, `${name} · ${badge.grade}`, name] : [name];
    ctx.save(); // the label stays in its cell, whatever its length
    ctx.beginPath();
    ctx.rect(box.x, box.y + inner, grid.size - 2, 18);
    ctx.clip();
    ctx.fillText(fitLabel(labels, inner, (t) => ctx.measureText(t).width), box.x + 2, box.y + inner + 16);
    ctx.restore();
    if (box.head === selected) {
      ctx.strokeStyle = theme.accent;
      ctx.lineWidth = 3;
      ctx.strokeRect(box.x + 1, box.y + 1, inner + 2, inner + 2);
    }
  }
  return grid;
}

/** A thumbnail (one head of the atlas) into a small canvas. */
export function drawThumb(canvas: HTMLCanvasElement, atlas: Atlas, head: number, lut: Uint8Array, side: number, theme: Theme): void {
  const ctx = sizeCanvas(canvas, side, side);
  if (!ctx) return;
  ctx.fillStyle = hatch(ctx, theme.masked);
  ctx.fillRect(0, 0, side, side);
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(imageOf(atlasPanel(atlas, head), lut, 0, theme.background, canvas, "thumb"), 0, 0, side, side);
}

/**
 * Reduce a row to at most `width` points, keeping each bucket's maximum, so a
 * single sharp key in a 4096-token row still shows as a spike.
 */
export function bucketMax(row: number[], width: number): number[] {
  if (row.length <= width) return row.slice();
  const out: number[] = [];
  for (let b = 0; b < width; b++) {
    const a = Math.floor((b * row.length) / width);
    const e = Math.max(a + 1, Math.floor(((b + 1) * row.length) / width));
    let m = -Infinity;
    for (let i = a; i < e; i++) m = Math.max(m, row[i]);
    out.push(m);
  }
  return out;
}

/** The selected query's weights over the key positions (its history), top-k keys marked. */
export function drawRowPlot(canvas: HTMLCanvasElement, row: number[], topK: number[], theme: Theme, width = 300, height = 90): void {
  const ctx = sizeCanvas(canvas, width, height);
  if (!ctx || row.length === 0) return;
  const pad = 4;
  const values = bucketMax(row, width - 2 * pad);
  const top = Math.max(...values, 1e-12);
  const x = (i: number) => pad + (values.length === 1 ? 0 : (i / (values.length - 1)) * (width - 2 * pad));
  const y = (v: number) => height - pad - (v / top) * (height - 2 * pad - 10);
  ctx.strokeStyle = theme.text;
  ctx.globalAlpha = 0.3;
  ctx.beginPath(); ctx.moveTo(pad, height - pad); ctx.lineTo(width - pad, height - pad); ctx.stroke();
  ctx.globalAlpha = 1;
  ctx.strokeStyle = theme.accent;
  ctx.lineWidth = 1.5;
  ctx.beginPath();
  values.forEach((v, i) => (i ? ctx.lineTo(x(i), y(v)) : ctx.moveTo(x(i), y(v))));
  ctx.stroke();
  ctx.fillStyle = theme.text;
  const scale = (values.length - 1) / Math.max(row.length - 1, 1);
  for (const k of topK) {
    const i = Math.round(k * scale);
    ctx.beginPath(); ctx.arc(x(i), y(values[i] ?? 0), 3, 0, 2 * Math.PI); ctx.fill();
  }
  ctx.font = "10px sans-serif";
  ctx.textBaseline = "top";
  ctx.fillText(`max ${formatWeight(Math.max(...row))}`, pad, 0);
}
