/** anywidget entry: wires the model's traits to the canvas, the controls and the metrics panel.
 *  Draws what Python sent; computes no metric. */
import { type Atlas, type AtlasMessage, decodeAtlas, decodePanel, LEVELS, MASKED, type Panel, type PanelMessage } from "./codec";
import { DIVERGING, lutOf } from "./colormaps";
import { badgeText, button, type Effect, fmt, type Metrics, renderEffect, renderMetrics, select, slider } from "./controls";
import {
  cellAt, clampViewport, drawGrid, drawHeatmap, drawRowPlot, drawThumb, formatWeight, fullViewport,
  type GridLayout, isFull, type Layout, MARGIN_LEFT, MARGIN_TOP, type Theme, type Viewport, zoomViewport,
} from "./heatmap";
import { savePng } from "./save";

/** Mirrors the synced traits of attnwidget.widget.AttentionView, same names. */
export interface ViewState {
  layer: number;
  head: number;
  threshold: number;
  query: number | null;
  mode: string;
  colormap: string;
  scale: string;
  top_k: number;
  viewport: number[];
  n_layers: number;
  n_heads: number;
  panel: PanelMessage;
  detail: PanelMessage | Record<string, never>;
  atlas: AtlasMessage | Record<string, never>;
  metrics: Metrics;
  query_tokens: string[];
  key_tokens: string[];
  caption: string;
  status: string;
  ablated: number[][];
  ablation_mode: string;
  compare: boolean;
  effect: Effect;
  panel_b: PanelMessage | Record<string, never>;
  panel_diff: PanelMessage | Record<string, never>;
  caption_b: string;
  sweep_scores: { score?: (number | null)[][]; metric?: string; mode?: string };
}

/** Every synced trait, same names as in Python (tests/test_package.py checks both lists agree). */
export const STATE_KEYS: (keyof ViewState)[] = [
  "layer", "head", "threshold", "query", "mode", "colormap", "scale", "top_k", "viewport",
  "n_layers", "n_heads", "panel", "detail", "atlas", "metrics", "query_tokens", "key_tokens",
  "caption", "status", "ablated", "ablation_mode", "compare", "effect", "panel_b", "panel_diff",
  "caption_b", "sweep_scores",
];

export const MODES = ["head", "grid", "average", "rollout"];
export const COLORMAP_NAMES = ["viridis", "magma", "inferno", "cividis", "greys"];
export const SCALES = ["auto", "fixed"];

interface Model {
  get<K extends keyof ViewState>(key: K): ViewState[K];
  set<K extends keyof ViewState>(key: K, value: ViewState[K]): void;
  save_changes(): void;
  on(event: string, cb: (...args: any[]) => void): void;
  off(event: string, cb: (...args: any[]) => void): void;
  send(content: unknown): void;
}

/** After this long without any reply to a change, the view says the kernel may be gone. */
export const NO_REPLY_MS = 5000;

/** The state a metrics reply must carry to be current (AttentionView._send_metrics' `view`). */
export function stateKey(s: {
  mode: string; layer: number; head: number; threshold: number; query: number | null; top_k: number;
  ablated?: number[][];
}): string {
  const head = s.mode === "head" || s.mode === "grid" ? s.head : null;
  return JSON.stringify([s.mode, s.layer, head, s.threshold, s.query, s.top_k, s.ablated ?? []]);
}

export function replyKey(view: Record<string, unknown> | undefined): string {
  if (!view) return "";
  return JSON.stringify([view.mode, view.layer, view.head, view.threshold, view.query, view.top_k, view.ablated ?? []]);
}

function panelKey(mode: string, layer: number, head: number | null, ablated: unknown): string {
  return JSON.stringify([mode === "grid" ? "head" : mode, layer, mode === "head" || mode === "grid" ? head : null, ablated ?? []]);
}

function colourOf(probe: CanvasRenderingContext2D | null, css: string, fallback: [number, number, number]): [number, number, number] {
  if (!probe || !css) return fallback;
  probe.fillStyle = "#000";
  probe.fillStyle = css; // the canvas normalises any CSS colour to #rrggbb (or rgba())
  const m = /^#([0-9a-f]{2})([0-9a-f]{2})([0-9a-f]{2})$/i.exec(String(probe.fillStyle));
  return m ? [parseInt(m[1], 16), parseInt(m[2], 16), parseInt(m[3], 16)] : fallback;
}

function render({ model, el }: { model: Model; el: HTMLElement }): () => void {
  el.classList.add("attnwidget");
  const controls = document.createElement("div");
  controls.className = "aw-controls";
  const layer = slider("layer", "1");
  const head = slider("head", "1");
  const threshold = slider("threshold", "0.005");
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
  controls.append(layer.box, head.box, threshold.box, mode.box, colormap.box, scale.box, compareBox, ablateButton, saveButton);

  const status = document.createElement("div");
  status.className = "aw-status";
  status.setAttribute("role", "alert");
  const body = document.createElement("div");
  body.className = "aw-body";
  const plot = document.createElement("div");
  plot.className = "aw-plot";
  const canvas = document.createElement("canvas");
  canvas.className = "aw-heatmap";
  canvas.tabIndex = 0;
  canvas.setAttribute("aria-label", "attention map: click a row to select a query, wheel to zoom, drag to pan, double-click to reset");
  const gridCanvas = document.createElement("canvas");
  gridCanvas.className = "aw-grid-view";
  const tooltip = document.createElement("div");
  tooltip.className = "aw-tooltip";
  const stale = document.createElement("div");
  stale.className = "aw-stale";
  stale.textContent = "updating…";
  const offline = document.createElement("div");
  offline.className = "aw-offline";
  offline.style.display = "none";
  offline.textContent = `No reply from the Python kernel for ${NO_REPLY_MS / 1000} s. If it was restarted or shut `
    + "down, this view is a snapshot of the old state: re-run its cell for a live view. "
    + "(If the kernel is only busy, this note goes away when it answers.)";
  plot.append(canvas, gridCanvas, tooltip, stale);
  const compareArea = document.createElement("div");
  compareArea.className = "aw-compare";
  const captionB = document.createElement("div");
  captionB.className = "aw-caption-b";
  const canvasB = document.createElement("canvas");
  canvasB.className = "aw-heatmap-b";
  const canvasDiff = document.createElement("canvas");
  canvasDiff.className = "aw-heatmap-diff";
  const diffTitle = document.createElement("div");
  diffTitle.className = "aw-diff-title";
  diffTitle.textContent = "A − B (red: A larger, blue: B larger)";
  compareArea.append(captionB, canvasB, diffTitle, canvasDiff);
  const effectBox = document.createElement("div");
  effectBox.className = "aw-effect";
  const side = document.createElement("div");
  side.className = "aw-side";
  const metricsBox = document.createElement("div");
  metricsBox.className = "aw-metrics";
  side.append(metricsBox, effectBox);
  body.append(plot, compareArea, side);
  const strip = document.createElement("div");
  strip.className = "aw-heads";
  const caption = document.createElement("div");
  caption.className = "aw-caption";
  el.append(controls, offline, status, body, strip, caption);

  const probe = document.createElement("canvas").getContext("2d");
  const theme = (): Theme => {
    const css = getComputedStyle(el);
    const v = (name: string, fb: string) => css.getPropertyValue(name).trim() || fb;
    return {
      text: v("--jp-ui-font-color1", "#222"),
      background: colourOf(probe, v("--jp-layout-color0", "#ffffff"), [255, 255, 255]),
      masked: v("--jp-border-color1", "#9e9e9e"),
      accent: v("--jp-brand-color1", "#e8590c"),
    };
  };

  // ---- decoded data, cached per message
  let panel: Panel | null = null;
  let detail: Panel | null = null;
  let atlas: Atlas | null = null;
  let viewport: Viewport | null = null;
  let layout: Layout | null = null;
  let grid: GridLayout | null = null;
  const decodeAll = () => {
    const p = model.get("panel");
    const prev = panel;
    panel = p && "buffer" in p ? decodePanel(p) : null;
    if (panel && (!prev || prev.fullRows !== panel.fullRows || prev.fullCols !== panel.fullCols)) {
      viewport = fullViewport(panel.fullRows, panel.fullCols);
    }
  };
  const decodeDetail = () => {
    const d = model.get("detail");
    detail = d && "buffer" in d ? decodePanel(d as PanelMessage) : null;
    // for tests and benchmarks: the full-resolution window now held, [q0, q1, k0, k1]
    el.dataset.detail = detail ? JSON.stringify((d as { window?: number[] }).window ?? []) : "";
  };
  const decodeThumbs = () => {
    const a = model.get("atlas");
    atlas = a && "buffer" in a ? decodeAtlas(a as AtlasMessage) : null;
  };

  const current = () => ({
    mode: model.get("mode"), layer: model.get("layer"), head: model.get("head"),
    threshold: model.get("threshold"), query: model.get("query"), top_k: model.get("top_k"),
    ablated: model.get("ablated"),
  });
  const panelFresh = () => {
    const s = current();
    return !!panel?.view && panelKey(panel.view.mode, panel.view.layer, panel.view.head, panel.view.ablated)
      === panelKey(s.mode, s.layer, s.head, s.ablated);
  };
  const metricsFresh = () => replyKey(model.get("metrics").view) === stateKey(current());

  // ---- liveness: every change sent is followed by a ping that Python answers after it has
  // handled the change. A restarted or shut-down kernel never answers (ipywidgets does not
  // mark the view), so after NO_REPLY_MS the view says it may be a snapshot.
  let pingSeq = 0;
  let noReplyTimer = 0;
  const armNoReply = () => {
    noReplyTimer = window.setTimeout(() => {
      offline.style.display = "";
      el.classList.add("aw-no-reply");
    }, NO_REPLY_MS);
  };
  // Values the user set while a request was in flight wait here until the next save. The
  // kernel echoes every change it receives (echo_update), and ipywidgets applies the echo of
  // the last value *sent* over any newer value set locally but not yet sent; without this, a
  // move made while Python was busy could be undone by the echo of the move before it.
  const unsent = new Map<keyof ViewState, unknown>();
  const setLocal = <K extends keyof ViewState>(name: K, value: ViewState[K]) => {
    unsent.set(name, value);
    model.set(name, value);
  };
  /** Put back an unsent user value that an echo overwrote; true when it did. */
  const keepUnsent = (name: string): boolean => {
    const key = name as keyof ViewState;
    if (!unsent.has(key)) return false;
    const mine = unsent.get(key) as ViewState[typeof key];
    if (JSON.stringify(model.get(key)) === JSON.stringify(mine)) return false;
    model.set(key, mine);
    return true;
  };
  const save = () => {
    if (!noReplyTimer) armNoReply(); // first: sending to a dead kernel may throw
    pingSeq += 1;
    unsent.clear();
    model.save_changes();
    model.send({ type: "ping", seq: pingSeq });
  };
  const onCustom = (msg: { type?: string; seq?: number }) => {
    if (msg?.type !== "pong") return;
    clearTimeout(noReplyTimer);
    noReplyTimer = 0;
    offline.style.display = "none";
    el.classList.remove("aw-no-reply");
    if ((msg.seq ?? 0) < pingSeq) armNoReply(); // alive, but the latest change is still pending
  };

  // ---- requests to Python: one in flight at a time, the latest state wins
  let waiting: string | null = null;
  let pending = false;
  let waitTimer = 0;
  const release = () => {
    waiting = null;
    clearTimeout(waitTimer);
    if (pending) {
      pending = false;
      request();
    }
  };
  const request = () => {
    if (waiting !== null) {
      pending = true;
      return;
    }
    const want = stateKey(current());
    save();
    if (want === replyKey(model.get("metrics").view)) return; // Python already shows this state
    waiting = want;
    waitTimer = window.setTimeout(release, 3000); // a lost or failed reply must not block the sliders
  };

  // ---- drawing
  let frame = 0;
  const draw = () => {
    cancelAnimationFrame(frame);
    frame = requestAnimationFrame(paint);
  };
  const paint = () => {
    const th = theme();
    const lut = lutOf(model.get("colormap"));
    const s = current();
    const inGrid = s.mode === "grid";
    canvas.style.display = inGrid ? "none" : "";
    gridCanvas.style.display = inGrid ? "" : "none";
    let fresh: boolean;
    if (inGrid) {
      fresh = !!atlas && atlas.layer === s.layer;
      if (atlas) grid = drawGrid(gridCanvas, atlas, lut, s.head, th);
    } else {
      fresh = panelFresh();
      if (panel && viewport) {
        const d = detail && detail.view && panel.view && JSON.stringify(detail.view) === JSON.stringify(panel.view) ? detail : null;
        layout = drawHeatmap(canvas, {
          panel, detail: d, viewport, lut, threshold: s.threshold,
          queryTokens: model.get("query_tokens"), keyTokens: model.get("key_tokens"), query: s.query, theme: th,
        });
      }
    }
    const pb = model.get("panel_b");
    const pd = model.get("panel_diff");
    const comparing = model.get("compare") && !!pb && "buffer" in pb && !inGrid;
    compareArea.style.display = comparing ? "" : "none";
    if (comparing && viewport) {
      const b = decodePanel(pb as PanelMessage);
      const common = { detail: null, viewport, threshold: s.threshold, queryTokens: model.get("query_tokens"),
        keyTokens: model.get("key_tokens"), query: s.query, theme: th, side: 256 };
      drawHeatmap(canvasB, { ...common, panel: b, lut });
      const hasDiff = !!pd && "buffer" in pd;
      canvasDiff.style.display = diffTitle.style.display = hasDiff ? "" : "none";
      if (hasDiff) {
        const d = decodePanel(pd as PanelMessage);
        const span = Number((pd as PanelMessage & { span?: number }).span ?? 1);
        drawHeatmap(canvasDiff, { ...common, panel: d, lut: DIVERGING, threshold: 0, barRange: [-span, span] });
      }
      captionB.textContent = model.get("caption_b");
      const v = b.view;
      compareArea.classList.toggle("aw-is-stale",
        !v || panelKey(v.mode, v.layer, v.head, v.ablated) !== panelKey(s.mode, s.layer, s.head, s.ablated));
    }
    const metricsOk = metricsFresh();
    metricsBox.classList.toggle("aw-is-stale", !metricsOk);
    stale.style.display = fresh && metricsOk ? "none" : "";
    plot.classList.toggle("aw-is-stale", !fresh);
    // hooks for tests and benchmarks: every paint, and every paint where picture and numbers are current
    el.dispatchEvent(new CustomEvent("aw-painted", { bubbles: true, detail: { key: stateKey(s), fresh, time: performance.now() } }));
    if (fresh && metricsOk) {
      const key = stateKey(s);
      el.dataset.rendered = key;
      el.dispatchEvent(new CustomEvent("aw-rendered", { bubbles: true, detail: { key, time: performance.now() } }));
    }
  };

  const showMetrics = () => {
    const m = model.get("metrics");
    const rowPlot = renderMetrics(metricsBox, m, model.get("key_tokens"), model.get("query_tokens"));
    if (rowPlot && m.query) drawRowPlot(rowPlot, m.query.row, m.query.top_k, theme());
    renderEffect(effectBox, model.get("effect"));
    if (waiting !== null && replyKey(m.view) === waiting) release();
    draw();
  };

  const thumbs: HTMLCanvasElement[] = [];
  const showThumbs = () => {
    const a = atlas;
    if (!a) return;
    if (strip.childElementCount !== a.heads) {
      strip.replaceChildren();
      thumbs.length = 0;
      for (let h = 0; h < a.heads; h++) {
        const box = document.createElement("button");
        box.type = "button";
        box.className = "aw-thumb";
        box.dataset.head = String(h);
        const c = document.createElement("canvas");
        const label = document.createElement("span");
        label.className = "aw-badge";
        box.append(c, label);
        box.addEventListener("click", (ev) => (ev.shiftKey ? toggleAblation(model.get("layer"), h) : selectHead(h)));
        strip.append(box);
        thumbs.push(c);
      }
    }
    const th = theme();
    const lut = lutOf(model.get("colormap"));
    const selected = model.get("head");
    const off = new Set(model.get("ablated").filter(([l]) => l === a.layer).map(([, h]) => h));
    a.badges.forEach((b, h) => {
      drawThumb(thumbs[h], a, h, lut, 56, th);
      const box = strip.children[h] as HTMLElement;
      const swept = model.get("sweep_scores").score?.[a.layer]?.[h];
      (box.lastChild as HTMLElement).textContent = (off.has(h) ? "✕ ablated · " : "") + badgeText(b)
        + (swept === undefined || swept === null ? "" : ` · Δ ${fmt(swept)}`);
      box.classList.toggle("aw-ablated", off.has(h));
      box.classList.toggle("aw-selected", h === selected);
      box.title = `${b.name}: mean entropy ${b.entropy.toFixed(3)} nats, sharpness ${b.sharpness.toFixed(3)} (${b.grade})`;
    });
    strip.classList.toggle("aw-is-stale", a.layer !== model.get("layer"));
  };

  const isAblated = (l: number, h: number) => model.get("ablated").some(([a, b]) => a === l && b === h);
  const toggleAblation = (l: number, h: number) => {
    const now = model.get("ablated");
    setLocal("ablated", isAblated(l, h) ? now.filter(([a, b]) => !(a === l && b === h)) : [...now, [l, h]].sort((x, y) => x[0] - y[0] || x[1] - y[1]));
    sync();
    showThumbs();
    request();
    draw();
  };
  const selectHead = (h: number) => {
    setLocal("head", h);
    if (model.get("mode") === "average" || model.get("mode") === "rollout") setLocal("mode", "head");
    sync();
    request();
    draw();
  };

  const sync = () => {
    for (const [name, s] of [["layer", layer], ["head", head]] as const) {
      const count = model.get(name === "layer" ? "n_layers" : "n_heads");
      s.input.max = String(count - 1);
      s.input.value = String(model.get(name));
      s.value.textContent = `${model.get(name)} / ${count - 1}`;
    }
    const headUsed = ["head", "grid"].includes(model.get("mode"));
    head.input.disabled = !headUsed;
    threshold.input.value = String(model.get("threshold"));
    threshold.value.textContent = model.get("threshold").toFixed(3);
    mode.input.value = model.get("mode");
    colormap.input.value = model.get("colormap");
    scale.input.value = model.get("scale");
    caption.textContent = model.get("caption"); // text, never HTML
    compareInput.checked = model.get("compare");
    const l = model.get("layer");
    const h = model.get("head");
    ablateButton.textContent = isAblated(l, h) ? `restore layer ${l} head ${h}` : `ablate layer ${l} head ${h}`;
    ablateButton.classList.toggle("aw-active", isAblated(l, h));
    ablateButton.disabled = !headUsed;
    status.textContent = model.get("status");
    status.style.display = model.get("status") ? "" : "none";
    for (let h = 0; h < strip.childElementCount; h++) {
      (strip.children[h] as HTMLElement).classList.toggle("aw-selected", h === model.get("head"));
    }
  };

  // ---- control events
  const onSlider = (name: "layer" | "head", input: HTMLInputElement) => () => {
    setLocal(name, Number(input.value));
    sync();
    request();
    draw();
  };
  const onLayer = onSlider("layer", layer.input);
  const onHead = onSlider("head", head.input);
  const onThreshold = () => {
    setLocal("threshold", Number(threshold.input.value));
    sync();
    draw(); // dimming is applied here at once; the metrics follow from Python
    request();
  };
  const onMode = () => {
    setLocal("mode", mode.input.value);
    sync();
    request();
    draw();
  };
  const onColormap = () => {
    setLocal("colormap", colormap.input.value);
    save();
    showThumbs();
    draw();
  };
  const onScale = () => {
    setLocal("scale", scale.input.value);
    save();
  };
  const onCompare = () => {
    setLocal("compare", compareInput.checked);
    save();
  };
  const onAblate = () => toggleAblation(model.get("layer"), model.get("head"));
  const onSave = () => void savePng(model.get("mode") === "grid" ? gridCanvas : canvas, model.get("caption"));
  const listeners: [EventTarget, string, EventListener][] = [
    [compareInput, "change", onCompare], [ablateButton, "click", onAblate], [saveButton, "click", onSave],
    [layer.input, "input", onLayer], [head.input, "input", onHead], [threshold.input, "input", onThreshold],
    [mode.input, "change", onMode], [colormap.input, "change", onColormap], [scale.input, "change", onScale],
  ];

  // ---- canvas interaction: hover, click a row, wheel zoom, drag pan, double-click reset
  let zoomTimer = 0;
  const requestDetail = () => {
    clearTimeout(zoomTimer);
    zoomTimer = window.setTimeout(() => {
      if (!panel || !viewport) return;
      let want: number[] = [];
      if (panel.pool > 1 && !isFull(viewport, panel.fullRows, panel.fullCols)) {
        want = [Math.floor(viewport.q0), Math.ceil(viewport.q1), Math.floor(viewport.k0), Math.ceil(viewport.k1)];
      }
      if (JSON.stringify(want) !== JSON.stringify(model.get("viewport"))) {
        model.set("viewport", want);
        save();
      }
    }, 120);
  };
  const pointer = (ev: MouseEvent) => {
    const r = canvas.getBoundingClientRect();
    return { x: ev.clientX - r.left, y: ev.clientY - r.top };
  };
  const valueAt = (q: number, k: number): string => {
    const src = detail && detail.view && panel?.view && JSON.stringify(detail.view) === JSON.stringify(panel.view)
      && q >= detail.originRow && q < detail.originRow + detail.rows * detail.pool
      && k >= detail.originCol && k < detail.originCol + detail.cols * detail.pool ? detail : panel;
    if (!src) return "";
    const i = Math.floor((q - src.originRow) / src.pool);
    const j = Math.floor((k - src.originCol) / src.pool);
    const level = src.levels[i * src.cols + j];
    if (level === MASKED) return "masked";
    const v = formatWeight((level / LEVELS) * src.vmax);
    return src.pool > 1 ? `≈${v} (max of a ${src.pool}×${src.pool} block; zoom in for single cells)` : `≈${v}`;
  };
  let drag: { x: number; y: number; vp: Viewport; moved: boolean } | null = null;
  const onMove = (ev: MouseEvent) => {
    if (!layout || !panel || !viewport) return;
    const { x, y } = pointer(ev);
    if (drag) {
      const dx = (x - drag.x) / layout.cell;
      const dy = (y - drag.y) / layout.cell;
      if (Math.abs(x - drag.x) + Math.abs(y - drag.y) > 3) drag.moved = true;
      if (drag.moved) {
        viewport = clampViewport({ q0: drag.vp.q0 - dy, q1: drag.vp.q1 - dy, k0: drag.vp.k0 - dx, k1: drag.vp.k1 - dx }, panel.fullRows, panel.fullCols);
        draw();
        requestDetail();
      }
    }
    const cell = cellAt(layout, x, y);
    if (!cell) {
      tooltip.style.display = "none";
      return;
    }
    const qt = model.get("query_tokens")[cell.q] ?? String(cell.q);
    const kt = model.get("key_tokens")[cell.k] ?? String(cell.k);
    // each token in its own <bdi> (set through textContent: tokens stay text), so that a
    // right-to-left token cannot reorder the arrow or the number, and a long one is cut
    // by CSS without hiding the weight
    const qEl = document.createElement("bdi");
    const kEl = document.createElement("bdi");
    qEl.className = kEl.className = "aw-tok";
    qEl.textContent = qt;
    kEl.textContent = kt;
    tooltip.replaceChildren(qEl, " → ", kEl, `: ${valueAt(cell.q, cell.k)}`);
    tooltip.style.display = "block";
    tooltip.style.left = `${x + 14}px`;
    tooltip.style.top = `${y + 10}px`;
  };
  const onLeave = () => {
    tooltip.style.display = "none";
  };
  const onDown = (ev: MouseEvent) => {
    if (!viewport) return;
    const { x, y } = pointer(ev);
    drag = { x, y, vp: { ...viewport }, moved: false };
  };
  const onUp = (ev: MouseEvent) => {
    const wasDrag = drag?.moved;
    drag = null;
    if (wasDrag || !layout) return;
    const { x, y } = pointer(ev);
    const cell = cellAt(layout, x, y);
    if (!cell) return;
    setLocal("query", model.get("query") === cell.q ? null : cell.q); // click the selected row again to clear
    request();
    draw();
  };
  const onWheel = (ev: WheelEvent) => {
    if (!layout || !panel || !viewport) return;
    const { x, y } = pointer(ev);
    const cell = cellAt(layout, x, y);
    if (!cell) return;
    ev.preventDefault();
    const q = viewport.q0 + (y - MARGIN_TOP) / layout.cell;
    const k = viewport.k0 + (x - MARGIN_LEFT) / layout.cell;
    viewport = zoomViewport(viewport, panel.fullRows, panel.fullCols, q, k, ev.deltaY < 0 ? 1.25 : 0.8);
    draw();
    requestDetail();
  };
  const onDouble = () => {
    if (!panel) return;
    viewport = fullViewport(panel.fullRows, panel.fullCols);
    draw();
    requestDetail();
  };
  const onKey = (ev: KeyboardEvent) => {
    if (!panel || !viewport) return;
    const q = model.get("query");
    const rows = panel.fullRows;
    if (ev.key === "Escape") setLocal("query", null);
    else if (ev.key === "ArrowDown") setLocal("query", q === null ? 0 : Math.min(rows - 1, q + 1));
    else if (ev.key === "ArrowUp") setLocal("query", q === null ? 0 : Math.max(0, q - 1));
    else if (ev.key === "+" || ev.key === "-") {
      const c = { q: (viewport.q0 + viewport.q1) / 2, k: (viewport.k0 + viewport.k1) / 2 };
      viewport = zoomViewport(viewport, rows, panel.fullCols, c.q, c.k, ev.key === "+" ? 1.5 : 1 / 1.5);
      requestDetail();
      draw();
      ev.preventDefault();
      return;
    } else if (ev.key === "0") {
      onDouble();
      return;
    } else return;
    ev.preventDefault();
    request();
    draw();
  };
  const onGridClick = (ev: MouseEvent) => {
    if (!grid) return;
    const r = gridCanvas.getBoundingClientRect();
    const x = ev.clientX - r.left;
    const y = ev.clientY - r.top;
    const hit = grid.boxes.find((b) => x >= b.x && x < b.x + grid!.size && y >= b.y - 14 && y < b.y + grid!.size - 14);
    if (hit) (ev.shiftKey ? toggleAblation(model.get("layer"), hit.head) : selectHead(hit.head));
  };
  listeners.push(
    [canvas, "mousemove", onMove as EventListener], [canvas, "mouseleave", onLeave],
    [canvas, "mousedown", onDown as EventListener], [window, "mouseup", onUp as EventListener],
    [canvas, "dblclick", onDouble], [canvas, "keydown", onKey as EventListener],
    [gridCanvas, "click", onGridClick as EventListener],
  );
  for (const [target, type, fn] of listeners) target.addEventListener(type, fn);
  canvas.addEventListener("wheel", onWheel, { passive: false });
  // the grid canvas shares the plot's mouse handling for hover-free selection only
  gridCanvas.style.cursor = "pointer";

  // ---- model events
  const onPanel = () => { decodeAll(); draw(); };
  const onDetail = () => { decodeDetail(); draw(); };
  const onAtlas = () => { decodeThumbs(); showThumbs(); draw(); };
  const onSync = () => { sync(); draw(); };
  const handlers: [string, () => void][] = [
    ["change:panel", onPanel], ["change:detail", onDetail], ["change:atlas", onAtlas],
    ["change:metrics", showMetrics], ["change:query_tokens", draw], ["change:key_tokens", draw],
    ["change:effect", showMetrics], ["change:panel_b", draw], ["change:panel_diff", draw], ["change:caption_b", draw],
    ["change:ablated", () => { sync(); showThumbs(); draw(); }], ["change:compare", () => { sync(); draw(); }],
    ["change:sweep_scores", showThumbs],
    ["change:colormap", () => { sync(); showThumbs(); draw(); }],
  ];
  for (const name of ["layer", "head", "threshold", "query", "mode", "scale", "caption", "status", "n_layers", "n_heads", "top_k"]) {
    handlers.push([`change:${name}`, onSync]);
  }
  // a change event that only undid an unsent user value is answered by putting it back
  // (which fires the event again, with the user's value)
  for (const [e, fn] of handlers) {
    const name = e.slice("change:".length);
    model.on(e, () => { if (!keepUnsent(name)) fn(); });
  }
  model.on("msg:custom", onCustom);

  // light/dark: JupyterLab flips attributes on <body> when the theme changes
  const themeWatch = new MutationObserver(() => { showThumbs(); showMetrics(); });
  themeWatch.observe(document.body, { attributes: true, attributeFilter: ["data-jp-theme-light", "data-jp-theme-name"] });

  decodeAll();
  decodeDetail();
  decodeThumbs();
  sync();
  showThumbs();
  showMetrics();
  return () => {
    cancelAnimationFrame(frame);
    clearTimeout(waitTimer);
    clearTimeout(zoomTimer);
    themeWatch.disconnect();
    clearTimeout(noReplyTimer);
    for (const [e, fn] of handlers) model.off(e, fn);
    model.off("msg:custom", onCustom);
    for (const [target, type, fn] of listeners) target.removeEventListener(type, fn);
    canvas.removeEventListener("wheel", onWheel);
  };
}

export default { render };
