/** The view: its DOM skeleton, the decoded messages it holds, and how it shows the model's state
 *  (controls in sync, the map painted, thumbnails and metrics). Reads the model; never writes it. */
import { type Atlas, type AtlasMessage, decodeAtlas, decodePanel, type Panel, type PanelMessage } from "./codec";
import { DIVERGING, lutOf } from "./colormaps";
import { badgeText, button, fmt, renderEffect, renderMetrics, select, type Slider, slider } from "./controls";
import { morph, restingPointer, setText } from "./dom";
import { drawGrid, drawRowPlot, drawThumb, type GridLayout } from "./heads";
import { drawHeatmap, fullViewport, type Layout, type Theme, type Viewport } from "./heatmap";
import { generationOf, markGenerationStart, markThumbRows, paintText, renderStep, type StepBlock, syncStep } from "./generation";
import { NO_REPLY_MS } from "./link";
import { COLORMAP_NAMES, current, dimBelow, HEAD_MODES, MODES, type Model, panelKey, replyKey, SCALES, stateKey } from "./state";
import { buildTextView, type TextView } from "./textview";

/** Side, in CSS pixels, of a head thumbnail in the strip under the map. */
const THUMB_PX = 56;

function div(className: string, text = ""): HTMLDivElement {
  const d = document.createElement("div");
  d.className = className;
  if (text) d.textContent = text;
  return d;
}

function holding<T extends HTMLElement>(parent: T, ...children: HTMLElement[]): T {
  parent.append(...children);
  return parent;
}

function canvasOf(className: string): HTMLCanvasElement {
  const c = document.createElement("canvas");
  c.className = className;
  return c;
}

/** Every element of the view, made once by buildView. */
export interface Parts {
  layer: Slider; head: Slider; threshold: Slider; step: Slider; text: TextView;
  mode: { input: HTMLSelectElement }; colormap: { input: HTMLSelectElement }; scale: { input: HTMLSelectElement };
  compareInput: HTMLInputElement; ablateButton: HTMLButtonElement; saveButton: HTMLButtonElement;
  offline: HTMLDivElement; status: HTMLDivElement; plot: HTMLDivElement; canvas: HTMLCanvasElement;
  gridCanvas: HTMLCanvasElement; tooltip: HTMLDivElement; stale: HTMLDivElement; compareArea: HTMLDivElement;
  captionA: HTMLDivElement; captionB: HTMLDivElement; canvasB: HTMLCanvasElement; canvasDiff: HTMLCanvasElement; diffTitle: HTMLDivElement;
  effectBox: HTMLDivElement; metricsBox: HTMLDivElement; strip: HTMLDivElement; caption: HTMLDivElement;
}

function buildControls(): [HTMLDivElement, Pick<Parts, "layer" | "head" | "threshold" | "step" | "mode" | "colormap" | "scale"
  | "compareInput" | "ablateButton" | "saveButton">] {
  const controls = div("aw-controls");
  const layer = slider("layer", "1");
  const head = slider("head", "1");
  const threshold = slider("threshold", "0.005");
  const step = slider("step", "1"); // a generation's tokens (generation.ts shows it for one only)
  step.box.style.display = "none";
  threshold.input.max = "1";
  const mode = select("mode", MODES);
  const colormap = select("colormap", COLORMAP_NAMES);
  const scale = select("scale", SCALES);
  const compareBox = document.createElement("label");
  compareBox.className = "aw-control aw-compare-toggle";
  const compareInput = document.createElement("input");
  compareInput.type = "checkbox";
  compareInput.className = "aw-check-compare";
  const compareTitle = document.createElement("span");
  compareTitle.textContent = "compare";
  compareBox.append(compareInput, compareTitle);
  const ablateButton = document.createElement("button");
  ablateButton.type = "button";
  ablateButton.className = "aw-ablate";
  const saveButton = button("save", "save PNG");
  controls.append(layer.box, head.box, threshold.box, step.box, mode.box, colormap.box, scale.box, compareBox, ablateButton, saveButton);
  return [controls, { layer, head, threshold, step, mode, colormap, scale, compareInput, ablateButton, saveButton }];
}

/** Build the view's DOM inside `el`. */
export function buildView(el: HTMLElement): Parts {
  el.classList.add("attnwidget");
  const [controls, inputs] = buildControls();
  const status = div("aw-status");
  status.setAttribute("role", "alert");
  const canvas = canvasOf("aw-heatmap");
  canvas.tabIndex = 0;
  canvas.setAttribute("aria-label", "attention map: click a row to select a query, wheel to zoom, drag to pan, double-click to reset");
  const gridCanvas = canvasOf("aw-grid-view");
  gridCanvas.style.cursor = "pointer";
  const offline = div("aw-offline", `No reply from the Python kernel for ${NO_REPLY_MS / 1000} s. If it was restarted or shut `
    + "down, this view is a snapshot of the old state: re-run its cell for a live view. "
    + "(If the kernel is only busy, this note goes away when it answers.)");
  offline.style.display = "none";
  const tooltip = div("aw-tooltip");
  const stale = div("aw-stale", "updating…");
  const plot = holding(div("aw-plot"), canvas, gridCanvas, tooltip, stale);
  const captionA = div("aw-caption-a");
  const captionB = div("aw-caption-b");
  const canvasB = canvasOf("aw-heatmap-b");
  const canvasDiff = canvasOf("aw-heatmap-diff");
  const diffTitle = div("aw-diff-title", "A − B (red: A larger, blue: B larger)");
  const compareArea = holding(div("aw-compare"), captionB, canvasB, diffTitle, canvasDiff);
  const metricsBox = div("aw-metrics");
  const effectBox = div("aw-effect");
  // the text view sits under the map in the map's own column: a taller metrics panel beside it
  // never moves the tokens under a resting pointer (which would hover another token)
  const text = buildTextView();
  const mapColumn = holding(div("aw-map-column"), captionA, plot, text.box);
  const body = holding(div("aw-body"), mapColumn, compareArea, holding(div("aw-side"), metricsBox, effectBox));
  const strip = div("aw-heads");
  const caption = div("aw-caption");
  el.append(controls, offline, status, body, strip, caption);
  return {
    ...inputs, text, offline, status, plot, canvas, gridCanvas, tooltip, stale, compareArea, captionA, captionB, canvasB,
    canvasDiff, diffTitle, effectBox, metricsBox, strip, caption,
  };
}

/** The messages the view holds, decoded once per message, and where the user has zoomed. */
export class Shown {
  panel: Panel | null = null;
  detail: Panel | null = null;
  atlas: Atlas | null = null;
  viewport: Viewport | null = null;
  layout: Layout | null = null;
  grid: GridLayout | null = null;
  /** Where the pointer rests on the map (canvas CSS pixels), null when it is off the map. */
  pointer: { x: number; y: number } | null = null;

  /** Decode the panel; a map of another size resets the zoom. */
  takePanel(model: Model): void {
    const p = model.get("panel");
    const prev = this.panel;
    this.panel = p && "buffer" in p ? decodePanel(p) : null;
    if (this.panel && (!prev || prev.fullRows !== this.panel.fullRows || prev.fullCols !== this.panel.fullCols)) {
      this.viewport = fullViewport(this.panel.fullRows, this.panel.fullCols);
    }
  }

  takeDetail(model: Model, el: HTMLElement): void {
    const d = model.get("detail");
    this.detail = d && "buffer" in d ? decodePanel(d as PanelMessage) : null;
    // for tests and benchmarks: the full-resolution window now held, [q0, q1, k0, k1]
    el.dataset.detail = this.detail ? JSON.stringify((d as { window?: number[] }).window ?? []) : "";
  }

  takeAtlas(model: Model): void {
    const a = model.get("atlas");
    this.atlas = a && "buffer" in a ? decodeAtlas(a as AtlasMessage) : null;
  }

  /** The zoomed window when it belongs to the panel shown (else null). */
  currentDetail(): Panel | null {
    const d = this.detail;
    return d && d.view && this.panel?.view && JSON.stringify(d.view) === JSON.stringify(this.panel.view) ? d : null;
  }
}

export function isAblated(model: Model, l: number, h: number): boolean {
  return model.get("ablated").some(([a, b]) => a === l && b === h);
}

/** Set a control's property only when it differs: each write of a slider's `max` or `value`, a
 *  select's `value` or a `disabled` flag invalidated the control's style even when unchanged, and
 *  sync runs on every synced change of a reply (about 1 ms a call in the ablation benchmark). */
function put<T extends object, K extends keyof T>(el: T, key: K, value: T[K]): void {
  if (el[key] !== value) el[key] = value;
}

/** Put the model's state into the controls and the caption (text, never HTML). */
export function sync(parts: Parts, model: Model): void {
  for (const [name, s] of [["layer", parts.layer], ["head", parts.head]] as const) {
    const count = model.get(name === "layer" ? "n_layers" : "n_heads");
    put(s.input, "max", String(count - 1));
    put(s.input, "value", String(model.get(name)));
    setText(s.value, `${model.get(name)} / ${count - 1}`);
  }
  const headUsed = HEAD_MODES.includes(model.get("mode"));
  put(parts.head.input, "disabled", !headUsed);
  put(parts.threshold.input, "value", String(model.get("threshold")));
  // until dimming is on, the threshold only counts sparsity: say so beside the slider
  setText(parts.threshold.value, model.get("threshold").toFixed(3) + (model.get("dim") ? "" : " (not dimming)"));
  put(parts.mode.input, "value", model.get("mode"));
  put(parts.colormap.input, "value", model.get("colormap"));
  put(parts.scale.input, "value", model.get("scale"));
  setText(parts.caption, model.get("caption"));
  put(parts.compareInput, "checked", model.get("compare"));
  const l = model.get("layer");
  const h = model.get("head");
  const off = isAblated(model, l, h);
  setText(parts.ablateButton, off ? `restore layer ${l} head ${h}` : `ablate layer ${l} head ${h}`);
  parts.ablateButton.classList.toggle("aw-active", off);
  put(parts.ablateButton, "disabled", !headUsed || !model.get("can_ablate"));
  put(parts.ablateButton, "title", model.get("can_ablate") ? ""
    : "this view shows a record, not a model: build it with AttentionView(model, text, tokenizer=...) to ablate heads");
  setText(parts.status, model.get("status"));
  put(parts.status.style, "display", model.get("status") ? "" : "none");
  syncStep(parts.step, model);
  for (let i = 0; i < parts.strip.childElementCount; i++) {
    // no head is shown in the average and rollout modes: none is outlined
    (parts.strip.children[i] as HTMLElement).classList.toggle("aw-selected", headUsed && i === model.get("head"));
  }
}

/** The comparison record's map and A − B beside the main map (hidden when not comparing). */
function paintComparison(parts: Parts, shown: Shown, model: Model, th: Theme, inGrid: boolean): void {
  const pb = model.get("panel_b");
  const pd = model.get("panel_diff");
  const comparing = model.get("compare") && !!pb && "buffer" in pb && !inGrid;
  // compare on with no B to draw (nothing to compare yet, or a mode without one): Python's note alone
  const note = model.get("compare") && !(pb && "buffer" in pb) && !!model.get("caption_b") && !inGrid;
  parts.compareArea.style.display = comparing || note ? "" : "none";
  parts.canvasB.style.display = comparing ? "" : "none";
  // caption A keeps its line while compare is on: a toggle then moves no row of the map under
  // the pointer
  parts.captionA.style.display = comparing || note ? "" : "none";
  if (note) {
    parts.canvasDiff.style.display = parts.diffTitle.style.display = "none";
    setText(parts.captionB, model.get("caption_b"));
    setText(parts.captionA, "A: this view's record");
  }
  if (!comparing || !shown.viewport) return;
  const ablated = model.get("ablated");
  setText(parts.captionA, ablated.length
    ? `A: ${ablated.map(([l, h]) => `L${l} H${h}`).join(", ")} ablated (${model.get("ablation_mode")})`
    : "A: this view's record");
  const s = current(model);
  const b = decodePanel(pb as PanelMessage);
  const common = { detail: null, viewport: shown.viewport, threshold: dimBelow(model), mark: s.threshold, queryTokens: model.get("query_tokens"),
    keyTokens: model.get("key_tokens"), query: s.query, theme: th, side: 256 };
  drawHeatmap(parts.canvasB, { ...common, panel: b, lut: lutOf(model.get("colormap")) });
  const hasDiff = !!pd && "buffer" in pd;
  parts.canvasDiff.style.display = parts.diffTitle.style.display = hasDiff ? "" : "none";
  if (hasDiff) {
    const span = Number((pd as PanelMessage & { span?: number }).span ?? 1);
    drawHeatmap(parts.canvasDiff, { ...common, panel: decodePanel(pd as PanelMessage), lut: DIVERGING, threshold: 0, barRange: [-span, span] });
  }
  setText(parts.captionB, model.get("caption_b"));
  parts.compareArea.classList.toggle("aw-is-stale", !b.view || panelKey(b.view) !== panelKey(s));
}

/** What each canvas (or head strip) was last drawn from. */
const drawnFrom = new WeakMap<HTMLElement, unknown[]>();

/** Whether `inputs` differ from what `target` was last drawn from (each compared by identity:
 *  decoded panels, token lists, luts and themes are new objects when they change); records them.
 *  A slider move paints at once, before its reply, with the stale mark in CSS: redrawing the
 *  unchanged map then (2-3 ms at 512 tokens) took the browser's core while the kernel and the
 *  server worked on the reply, and so did twelve thumbnails on an ablation click. */
export function changed(target: HTMLElement, inputs: unknown[]): boolean {
  const last = drawnFrom.get(target);
  if (last && last.length === inputs.length && last.every((v, i) => v === inputs[i])) return false;
  drawnFrom.set(target, inputs);
  return true;
}

/** Forget what the view's canvases were drawn from, so the next paint draws them all: the
 *  browser gave back a canvas blank (its 2D context was lost and restored). */
export function forgetDrawn(parts: Parts): void {
  for (const target of [parts.canvas, parts.gridCanvas, parts.strip, parts.metricsBox]) drawnFrom.delete(target);
}

/** Paint the map (or the grid) and mark what is stale; tells tests and benchmarks through events. */
export function paint(el: HTMLElement, parts: Parts, shown: Shown, model: Model, th: Theme): void {
  const start = performance.now();
  const s = current(model);
  const inGrid = s.mode === "grid";
  parts.canvas.style.display = inGrid ? "none" : "";
  parts.gridCanvas.style.display = inGrid ? "" : "none";
  const lut = lutOf(model.get("colormap"));
  let fresh: boolean;
  if (inGrid) {
    fresh = !!shown.atlas && shown.atlas.layer === s.layer;
    if (shown.atlas && changed(parts.gridCanvas, [shown.atlas, lut, model.get("head"), th, globalThis.devicePixelRatio])) {
      shown.grid = drawGrid(parts.gridCanvas, shown.atlas, lut, model.get("head"), th);
    }
  } else {
    const view = shown.panel?.view;
    fresh = !!view && panelKey(view) === panelKey(s);
    const detail = shown.currentDetail();
    const [queryTokens, keyTokens, threshold, P] = [model.get("query_tokens"), model.get("key_tokens"), dimBelow(model), generationOf(model)?.P];
    if (shown.panel && shown.viewport && changed(parts.canvas, [shown.panel, detail, shown.viewport, lut, threshold,
      s.threshold, queryTokens, keyTokens, s.query, th, P, globalThis.devicePixelRatio])) {
      shown.layout = drawHeatmap(parts.canvas, {
        panel: shown.panel, detail, viewport: shown.viewport, lut, threshold, mark: s.threshold, queryTokens, keyTokens, query: s.query, theme: th,
      });
      if (P !== undefined) markGenerationStart(parts.canvas, shown.layout, P, th);
    }
  }
  paintComparison(parts, shown, model, th, inGrid);
  paintText(parts.text, model, th);
  // with the text view on, "rendered" also waits for its shading of this state
  const textOk = !model.get("show_text") || !!parts.text.box.dataset.shown;
  const metricsOk = replyKey(model.get("metrics").view) === stateKey(s);
  parts.metricsBox.classList.toggle("aw-is-stale", !metricsOk);
  parts.stale.style.display = fresh && metricsOk && textOk ? "none" : "";
  parts.plot.classList.toggle("aw-is-stale", !fresh);
  // hooks for tests and benchmarks: every paint, and every paint where picture and numbers are current
  const key = stateKey(s);
  el.dispatchEvent(new CustomEvent("aw-painted", { bubbles: true, detail: { key, fresh, time: performance.now(), ms: performance.now() - start } }));
  // a paint outside the page (before the host attaches the view) is no picture the user saw
  if (fresh && metricsOk && textOk && el.isConnected) {
    el.dataset.rendered = key;
    el.dispatchEvent(new CustomEvent("aw-rendered", { bubbles: true, detail: { key, time: performance.now() } }));
  }
}

/** The metrics table, the selected query's row plot and the ablation's effect. */
export function showMetrics(parts: Parts, model: Model, th: Theme): void {
  const m = model.get("metrics");
  const [keyTokens, queryTokens, P] = [model.get("key_tokens"), model.get("query_tokens"), generationOf(model)?.P ?? 0];
  // a reply that changes both the metrics and the effect (an ablation) calls this for each, after
  // both are set: the second call has nothing new to show
  if (changed(parts.metricsBox, [m, keyTokens, queryTokens, P, th])) {
    // built detached, then only what differs is written into the page (dom.ts)
    const fresh = document.createElement("div");
    renderMetrics(fresh, m, keyTokens, queryTokens);
    renderStep(fresh, m.step as StepBlock | undefined, queryTokens, P);
    morph(parts.metricsBox, fresh);
    const rowPlot = parts.metricsBox.querySelector<HTMLCanvasElement>("canvas.aw-row-plot");
    if (rowPlot && m.query) drawRowPlot(rowPlot, m.query.row, m.query.top_k, th);
  }
  if (changed(parts.effectBox, [model.get("effect")])) {
    const effect = document.createElement("div");
    renderEffect(effect, model.get("effect"), parts.effectBox.style.minHeight !== "");
    morph(parts.effectBox, effect);
  }
}

/** How long the pointer rests on a thumbnail, shift held, before the ablation hint goes (ms). */
const HINT_REST_MS = 100;

/** (Re)make the strip's buttons, one per head; `onPick(head, shift)` on a click, `onHint(head)`
 * when the pointer rests on one with shift held (a shift-click toggles that head's ablation). */
function thumbButtons(strip: HTMLElement, heads: number, onPick: (head: number, shift: boolean) => void,
  onHint: (head: number) => void): void {
  strip.replaceChildren();
  for (let h = 0; h < heads; h++) {
    const box = document.createElement("button");
    box.type = "button";
    box.className = "aw-thumb";
    box.dataset.head = String(h);
    const label = document.createElement("span");
    label.className = "aw-badge";
    box.append(document.createElement("canvas"), label);
    box.addEventListener("click", (ev) => onPick(h, ev.shiftKey));
    // only once the pointer rests on it: a sweep across the strip with shift held would
    // otherwise have the kernel run the model once per thumbnail passed
    for (const [target, type, fn] of restingPointer(box, () => onHint(h), HINT_REST_MS, (ev) => ev.shiftKey)) {
      target.addEventListener(type, fn);
    }
    strip.append(box);
  }
}

/** The head strip: a thumbnail per head with its badge, ablation mark and sweep score. */
export function showThumbs(parts: Parts, shown: Shown, model: Model, th: Theme, onPick: (head: number, shift: boolean) => void,
  onHint: (head: number) => void): void {
  const a = shown.atlas;
  if (!a) return;
  const strip = parts.strip;
  const rebuilt = strip.childElementCount !== a.heads;
  if (rebuilt) thumbButtons(strip, a.heads, onPick, onHint);
  const lut = lutOf(model.get("colormap"));
  const selected = HEAD_MODES.includes(model.get("mode")) ? model.get("head") : -1;
  const off = new Set(model.get("ablated").filter(([l]) => l === a.layer).map(([, h]) => h));
  // the pictures change with the atlas, colormap, theme and a generation's query row; a click
  // that only ablates a head changes a badge, and redrawing twelve canvases then cost the
  // browser a core the model's re-run needed
  const redraw = changed(strip, [a, lut, th, generationOf(model) ? model.get("query") : null, globalThis.devicePixelRatio])
    || rebuilt;
  a.badges.forEach((b, h) => {
    const box = strip.children[h] as HTMLElement;
    if (redraw) drawThumb(box.firstChild as HTMLCanvasElement, a, h, lut, THUMB_PX, th);
    const swept = model.get("sweep_scores").score?.[a.layer]?.[h];
    setText(box.lastChild as HTMLElement, (off.has(h) ? "✕ ablated · " : "") + badgeText(b)
      + (swept === undefined || swept === null ? "" : ` · Δ ${fmt(swept)}`));
    box.classList.toggle("aw-ablated", off.has(h));
    box.classList.toggle("aw-selected", h === selected);
    const title = `${b.name}: mean entropy ${b.entropy.toFixed(3)} nats, sharpness ${b.sharpness.toFixed(3)} (${b.grade})`;
    if (box.title !== title) box.title = title;
  });
  strip.classList.toggle("aw-is-stale", a.layer !== model.get("layer"));
  if (redraw && generationOf(model)) markThumbRows(strip, model.get("query"), model.get("query_tokens").length, THUMB_PX, th);
}
