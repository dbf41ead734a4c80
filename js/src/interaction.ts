/** What the user does: the controls, and on the canvas hover, click a row, wheel zoom, drag pan,
 *  keys, double-click reset, and clicks on the grid. Writes the model only through the link. */
import { MASKED } from "./codec";
import { headAt } from "./heads";
import {
  cellAt, clampViewport, drawnScale, formatWeight, fullViewport, isFull, MARGIN_LEFT, MARGIN_TOP, type Viewport, weightOfLevel,
  zoomViewport,
} from "./heatmap";
import type { Listener } from "./dom";
import type { Link } from "./link";
import { savePng } from "./save";
import type { Model } from "./state";
import { isAblated, type Parts, type Shown } from "./view";

/** What the handlers may ask of the rest of the view. */
export interface Refresh {
  draw(): void;
  sync(): void;
  showThumbs(): void;
}

/** The heads left switched off once head `h` of layer `l` is toggled (as `ablated` holds them). */
export function toggled(model: Model, l: number, h: number): number[][] {
  const now = model.get("ablated");
  return isAblated(model, l, h) ? now.filter(([a, b]) => !(a === l && b === h))
    : [...now, [l, h]].sort((x, y) => x[0] - y[0] || x[1] - y[1]);
}

/** A click is coming that toggles head `head` of the shown layer (the pointer or the focus is on
 * the ablate button, or the pointer on a head thumbnail with shift held): let the kernel run the
 * model for the heads it would leave switched off, so that the click finds the run done. A hint:
 * nothing waits for an answer, and the kernel drops one that no longer fits. */
export function hintAblation(model: Model, head: number): void {
  if (!model.get("can_ablate")) return;
  const heads = toggled(model, model.get("layer"), head);
  if (heads.length) model.send({ type: "prepare_ablation", ablated: heads, mode: model.get("ablation_mode") });
}

/** Select a head (leaving the layer modes), or with shift toggle its ablation. */
export function headPicker(model: Model, link: Link, ui: Refresh): (head: number, shift: boolean) => void {
  const toggleAblation = (l: number, h: number) => {
    link.setLocal("ablated", toggled(model, l, h));
    link.request(); // first: the kernel starts on the re-run while the page redraws
    ui.sync();
    ui.showThumbs();
    ui.draw();
  };
  return (head, shift) => {
    // a view of a record has no model to re-run: a shift-click only selects the head
    if (shift && model.get("can_ablate")) return toggleAblation(model.get("layer"), head);
    link.setLocal("head", head);
    if (model.get("mode") === "average" || model.get("mode") === "rollout") link.setLocal("mode", "head");
    link.request();
    ui.sync();
    ui.draw();
  };
}

/** The controls' listeners. */
export function controlListeners(parts: Parts, model: Model, link: Link, ui: Refresh, pick: (h: number, s: boolean) => void): Listener[] {
  const requesting = (name: "layer" | "head" | "mode", read: () => string | number) => () => {
    link.setLocal(name, read() as never);
    link.request(); // sent before the page's own updates: the kernel works meanwhile
    ui.sync();
    ui.draw();
  };
  const onThreshold = () => {
    link.setLocal("threshold", Number(parts.threshold.input.value));
    link.setLocal("dim", true); // moving the threshold is asking to see it on the map
    ui.sync();
    ui.draw(); // dimming is applied here at once; the metrics follow from Python
    link.request();
  };
  const onColormap = () => {
    link.setLocal("colormap", parts.colormap.input.value);
    link.save();
    ui.showThumbs();
    ui.draw();
  };
  const hintButton = () => { if (!parts.ablateButton.disabled) hintAblation(model, model.get("head")); };
  const saving = (apply: () => void) => () => {
    apply();
    link.save();
  };
  return [
    [parts.compareInput, "change", saving(() => link.setLocal("compare", parts.compareInput.checked))],
    [parts.ablateButton, "click", () => pick(model.get("head"), true)],
    // at once, not after a rest: measured in JupyterLab (bench_widget.py, pointer resting 150 ms
    // before the click), a 60 ms rest first made the click 2.6-2.8x the floor against 1.0-1.4x
    [parts.ablateButton, "pointerenter", hintButton],
    [parts.ablateButton, "focus", hintButton], // keyboard focus: the next key may be the click
    [parts.saveButton, "click", () => void savePng(model.get("mode") === "grid" ? parts.gridCanvas : parts.canvas, model.get("caption"))],
    [parts.layer.input, "input", requesting("layer", () => Number(parts.layer.input.value))],
    [parts.head.input, "input", requesting("head", () => Number(parts.head.input.value))],
    [parts.threshold.input, "input", onThreshold],
    [parts.mode.input, "change", requesting("mode", () => parts.mode.input.value)],
    [parts.colormap.input, "change", onColormap],
    [parts.scale.input, "change", saving(() => link.setLocal("scale", parts.scale.input.value))],
  ];
}

/** The hover text of a full-resolution cell: its weight, from the zoomed window where it has it. */
function valueAt(shown: Shown, q: number, k: number): string {
  const d = shown.currentDetail();
  const src = d && q >= d.originRow && q < d.originRow + d.rows * d.pool
    && k >= d.originCol && k < d.originCol + d.cols * d.pool ? d : shown.panel;
  if (!src) return "";
  const i = Math.floor((q - src.originRow) / src.pool);
  const j = Math.floor((k - src.originCol) / src.pool);
  const level = src.levels[i * src.cols + j];
  if (level === MASKED) return "masked";
  const v = formatWeight(weightOfLevel(level, src.vmax, src.sqrt));
  return src.pool > 1 ? `≈${v} (max of a ${src.pool}×${src.pool} block; zoom in for single cells)` : `≈${v}`;
}

/** Show the query and key tokens of a cell and its weight (each token a <bdi> set as text). */
function showTooltip(tooltip: HTMLElement, model: Model, shown: Shown, cell: { q: number; k: number }, x: number, y: number,
  scale: number): void {
  // each token in its own <bdi> (set through textContent: tokens stay text), so that a
  // right-to-left token cannot reorder the arrow or the number, and a long one is cut
  // by CSS without hiding the weight
  const qEl = document.createElement("bdi");
  const kEl = document.createElement("bdi");
  qEl.className = kEl.className = "aw-tok";
  qEl.textContent = model.get("query_tokens")[cell.q] ?? String(cell.q);
  kEl.textContent = model.get("key_tokens")[cell.k] ?? String(cell.k);
  tooltip.replaceChildren(qEl, " → ", kEl, `: ${valueAt(shown, cell.q, cell.k)}`);
  tooltip.style.display = "block";
  tooltip.style.left = `${x / scale + 14}px`; // x, y in drawing units; the plot's pixels are shown ones
  tooltip.style.top = `${y / scale + 10}px`;
}

/** After a paint: the tooltip of the cell under a resting pointer, of the map now drawn. A layer,
 *  head or zoom change under a still pointer would otherwise leave the old map's weight showing. */
export function refreshTooltip(parts: Parts, model: Model, shown: Shown): void {
  const { tooltip } = parts;
  if (tooltip.style.display !== "block") return;
  const cell = shown.pointer && shown.layout && model.get("mode") !== "grid" ? cellAt(shown.layout, shown.pointer.x, shown.pointer.y) : null;
  if (cell && shown.pointer) showTooltip(tooltip, model, shown, cell, shown.pointer.x, shown.pointer.y, drawnScale(parts.canvas));
  else tooltip.style.display = "none";
}

/** Show another part of the map: repaint at once, ask for its full-resolution window once zooming rests. */
function zoomer(shown: Shown, link: Link, ui: Refresh): (vp: Viewport) => void {
  const askDetail = () => link.requestViewport(() => {
    const { panel, viewport: vp } = shown;
    if (!panel || !vp) return null;
    if (panel.pool <= 1 || isFull(vp, panel.fullRows, panel.fullCols)) return [];
    return [Math.floor(vp.q0), Math.ceil(vp.q1), Math.floor(vp.k0), Math.ceil(vp.k1)];
  });
  return (vp) => {
    shown.viewport = vp;
    ui.draw();
    askDetail();
  };
}

/** Keys on the focused map: arrows move the selected query, Escape clears it, + / - zoom, 0 resets. */
function keyHandler(model: Model, shown: Shown, zoomed: (vp: Viewport) => void, selectQuery: (q: number | null) => void,
  reset: () => void): (ev: KeyboardEvent) => void {
  return (ev) => {
    const { panel, viewport: vp } = shown;
    if (!panel || !vp) return;
    const q = model.get("query");
    const rows = panel.fullRows;
    if (ev.key === "+" || ev.key === "-") {
      const c = { q: (vp.q0 + vp.q1) / 2, k: (vp.k0 + vp.k1) / 2 };
      zoomed(zoomViewport(vp, rows, panel.fullCols, c.q, c.k, ev.key === "+" ? 1.5 : 1 / 1.5));
    } else if (ev.key === "0") return reset();
    else if (ev.key === "Escape") selectQuery(null);
    else if (ev.key === "ArrowDown") selectQuery(q === null ? 0 : Math.min(rows - 1, q + 1));
    else if (ev.key === "ArrowUp") selectQuery(q === null ? 0 : Math.max(0, q - 1));
    else return;
    ev.preventDefault();
  };
}

/** The canvas's and the grid's listeners (the wheel one is not passive: it stops page scroll). */
export function canvasListeners(parts: Parts, model: Model, shown: Shown, link: Link, ui: Refresh,
  pick: (h: number, s: boolean) => void): Listener[] {
  const { canvas, gridCanvas, tooltip } = parts;
  const zoomed = zoomer(shown, link, ui);
  const pointer = (ev: MouseEvent) => {
    const r = canvas.getBoundingClientRect();
    const s = drawnScale(canvas, r.width);
    return { x: (ev.clientX - r.left) * s, y: (ev.clientY - r.top) * s, s };
  };
  const selectQuery = (q: number | null) => {
    link.setLocal("query", q);
    link.request();
    ui.draw();
  };
  let drag: { x: number; y: number; vp: Viewport; moved: boolean } | null = null;
  const onMove = (ev: MouseEvent) => {
    const { layout, panel } = shown;
    if (!layout || !panel || !shown.viewport) return;
    const { x, y, s } = pointer(ev);
    if (drag) {
      const dx = (x - drag.x) / layout.cell;
      const dy = (y - drag.y) / layout.cell;
      if (Math.abs(x - drag.x) + Math.abs(y - drag.y) > 3) drag.moved = true;
      const v = drag.vp;
      if (drag.moved) zoomed(clampViewport({ q0: v.q0 - dy, q1: v.q1 - dy, k0: v.k0 - dx, k1: v.k1 - dx }, panel.fullRows, panel.fullCols));
    }
    shown.pointer = { x, y };
    const cell = cellAt(layout, x, y);
    if (cell) showTooltip(tooltip, model, shown, cell, x, y, s);
    else tooltip.style.display = "none";
  };
  const onDown = (ev: MouseEvent) => {
    if (shown.viewport) drag = { ...pointer(ev), vp: { ...shown.viewport }, moved: false };
  };
  const onUp = (ev: MouseEvent) => {
    const wasDrag = drag?.moved;
    drag = null;
    if (wasDrag || !shown.layout) return;
    const { x, y } = pointer(ev);
    const cell = cellAt(shown.layout, x, y);
    if (cell) selectQuery(model.get("query") === cell.q ? null : cell.q); // the selected row again clears
  };
  const onWheel = (ev: WheelEvent) => {
    const { layout, panel, viewport: vp } = shown;
    if (!layout || !panel || !vp) return;
    const { x, y } = pointer(ev);
    if (!cellAt(layout, x, y)) return;
    ev.preventDefault();
    const q = vp.q0 + (y - MARGIN_TOP) / layout.cell;
    const k = vp.k0 + (x - MARGIN_LEFT) / layout.cell;
    zoomed(zoomViewport(vp, panel.fullRows, panel.fullCols, q, k, ev.deltaY < 0 ? 1.25 : 0.8));
  };
  const onDouble = () => {
    if (shown.panel) zoomed(fullViewport(shown.panel.fullRows, shown.panel.fullCols));
  };
  const onKey = keyHandler(model, shown, zoomed, selectQuery, onDouble);
  const onGridClick = (ev: MouseEvent) => {
    if (!shown.grid) return;
    const r = gridCanvas.getBoundingClientRect();
    const s = drawnScale(gridCanvas, r.width);
    const head = headAt(shown.grid, (ev.clientX - r.left) * s, (ev.clientY - r.top) * s);
    if (head !== null) pick(head, ev.shiftKey);
  };
  return [
    [canvas, "mousemove", onMove as EventListener], [canvas, "mouseleave", () => { tooltip.style.display = "none"; shown.pointer = null; }],
    [canvas, "mousedown", onDown as EventListener], [window, "mouseup", onUp as EventListener],
    [canvas, "dblclick", onDouble], [canvas, "keydown", onKey as EventListener],
    [canvas, "wheel", onWheel as EventListener, { passive: false }],
    [gridCanvas, "click", onGridClick as EventListener],
  ];
}
