/** A generation in the view: the step control, the step's block in the metrics panel (numbers
 *  from Python), the generation start and the selected row marked on the map and the head strip,
 *  and the text view painted from the model's state. Draws; computes no metric. */
import { fmt, row, type Slider } from "./controls";
import { setText } from "./dom";
import { type Layout, MARGIN_LEFT, MARGIN_TOP, type Theme } from "./heatmap";
import { lutOf } from "./colormaps";
import { current, dimBelow, type Model, panelKey } from "./state";
import { currentRow, setTokens, shadeText, type TextView, tokenAt } from "./textview";

/** The metrics' `step` block (attnwidget._messages.step_block). */
export interface StepBlock {
  step: number; query: number; position: number; top_k: number[]; top_k_weights: number[];
  prompt_share: number; generated_share: number;
}

/** The generation's prompt length P and new tokens N, or null for a view of no generation. */
export function generationOf(model: Model): { P: number; N: number } | null {
  const g = model.get("generation");
  return g && typeof g.prompt_length === "number" ? { P: g.prompt_length, N: g.n_new ?? 0 } : null;
}

/** The query row that chose step `s` (attnwidget.generate: prompt_length + step - 1). */
export function stepQuery(P: number, s: number): number {
  return P + s - 1;
}

/** Put the step into its slider: shown for a generation only; "–" when no step is selected. */
export function syncStep(step: Slider, model: Model): void {
  const g = generationOf(model);
  step.box.style.display = g ? "" : "none";
  if (!g) return;
  const s = model.get("step");
  step.input.max = String(g.N - 1);
  if (s !== null) step.input.value = String(s);
  const token = s === null ? "" : ` “${model.get("query_tokens")[g.P + s] ?? ""}”`;
  setText(step.value, s === null ? `– / ${g.N - 1}` : `${s} / ${g.N - 1}${token}`);
}

/** The step's block under the metrics: the token written, its top-k keys (prompt or generated),
 *  and its weight on the prompt vs on generated text, appended to `box`. Text only. */
export function renderStep(box: HTMLElement, block: StepBlock | undefined, tokens: string[], P: number): void {
  if (!block) return;
  const wrap = document.createElement("div");
  wrap.className = "aw-step-block";
  const title = document.createElement("div");
  title.className = "aw-step-title";
  const tok = document.createElement("bdi");
  tok.textContent = tokens[block.position] ?? "";
  title.append(`step ${block.step}: wrote “`, tok, `” at ${block.position}, chosen by query ${block.query}`);
  const table = document.createElement("table");
  table.className = "aw-step-table";
  row(table, "step-prompt_share", "weight on the prompt", fmt(block.prompt_share));
  row(table, "step-generated_share", "weight on generated text", fmt(block.generated_share));
  block.top_k.forEach((k, i) => row(table, `step-top-${i}`,
    `#${i + 1} key ${k} “${tokens[k] ?? ""}” (${k < P ? "prompt" : "generated"})`, fmt(block.top_k_weights[i])));
  wrap.append(title, table);
  box.append(wrap);
}

/** The generation start on the map: a line before row P and one before column P (where shown).
 *  Solid 2-pixel fills (no anti-aliasing), so a test can find them. */
export function markGenerationStart(canvas: HTMLCanvasElement, layout: Layout | null, P: number, th: Theme): void {
  const ctx = canvas.getContext("2d");
  if (!ctx || !layout) return;
  const { vp, cell, width, height } = layout;
  const x = Math.round(MARGIN_LEFT + (P - vp.k0) * cell) - 1;
  const y = Math.round(MARGIN_TOP + (P - vp.q0) * cell) - 1;
  // the theme's text colour may be translucent (JupyterLab: rgba(0, 0, 0, 0.87)): laid on an
  // opaque background fill, the line is one colour over every cell
  for (const colour of [`rgb(${th.background.join(", ")})`, th.text]) {
    ctx.fillStyle = colour;
    if (P > vp.k0 && P < vp.k1) ctx.fillRect(x, MARGIN_TOP, 2, height);
    if (P > vp.q0 && P < vp.q1) ctx.fillRect(MARGIN_LEFT, y, width, 2);
  }
  canvas.dataset.generationStart = JSON.stringify({ x, y, P });
}

/** The selected query's row on each head thumbnail (their side `side` CSS pixels covers all rows). */
export function markThumbRows(strip: HTMLElement, query: number | null, rows: number, side: number, th: Theme): void {
  if (query === null || rows === 0) return;
  const y = Math.floor(((query + 0.5) / rows) * side);
  for (const c of strip.querySelectorAll("canvas")) {
    const ctx = (c as HTMLCanvasElement).getContext("2d");
    if (!ctx) continue;
    ctx.fillStyle = th.accent;
    ctx.fillRect(0, Math.max(0, y - 1), side, 2);
  }
}

/** Paint the text view from the model: tokens (once), shading, marks, title. Hidden when off. */
export function paintText(tv: TextView, model: Model, th: Theme): void {
  const on = model.get("show_text");
  tv.box.style.display = on ? "" : "none";
  if (!on) return;
  const g = generationOf(model);
  const tokens = model.get("key_tokens");
  setTokens(tv, tokens, g ? g.P : null);
  // the row belongs to the picture's key (its map and colour scale), as the map's own picture does
  const query = model.get("query");
  tv.selection.follow(query);
  const msg = model.get("text_row");
  const rowNow = currentRow(msg, panelKey(current(model)), query, (v) => panelKey(v as Parameters<typeof panelKey>[0]));
  const step = model.get("step");
  const written = g && step !== null ? g.P + step : null;
  const title = query === null
    ? "each token shaded by the attention it receives (its mean weight over all query rows)"
    : `each token shaded by query ${query}'s weight on it` + (tv.selection.pinned === query ? " (pinned: click it to unpin)" : "");
  shadeText(tv, rowNow, !rowNow, lutOf(model.get("colormap")), dimBelow(model), th.background, query, written, title);
  const shown = rowNow ? JSON.stringify({ query, vmax: rowNow.vmax }) : "";
  if (tv.box.dataset.shown !== shown) tv.box.dataset.shown = shown; // for tests and benchmarks
}

/** What a generation's traits need when they change: the step control, the selected row on the
 *  thumbnails (redrawn, then marked), the text view. */
export function generationHandlers(model: Model, ui: { sync(): void; draw(): void; showThumbs(): void }): [string, () => void][] {
  const withThumbs = () => { ui.sync(); ui.showThumbs(); ui.draw(); };
  return [
    ["text_row", ui.draw], ["show_text", ui.draw], ["generation", withThumbs], ["step", ui.sync],
    ["query", () => { if (generationOf(model)) ui.showThumbs(); }],
  ];
}

type Listener = [EventTarget, string, EventListener, AddEventListenerOptions?];

/** What the listeners need of the link and the view (interaction.ts's Link and Refresh). */
interface Sender {
  setLocal(name: "query" | "step", value: number | null): void;
  request(): void;
}

/** The step slider and the text view's hover / click / leave (one listener each, delegated). */
export function generationListeners(step: Slider, tv: TextView, model: Model, link: Sender,
  ui: { sync(): void; draw(): void; showThumbs(): void }): Listener[] {
  const select = (q: number | null | undefined) => {
    if (q === undefined) return ui.draw(); // no new query: only the pin mark changed
    link.setLocal("query", q);
    const g = generationOf(model);
    const s = g && q !== null && q - g.P + 1 >= 0 && q - g.P + 1 < g.N ? q - g.P + 1 : null;
    link.setLocal("step", s); // as Python will: the step whose token this query chose
    ui.sync();
    link.request();
    ui.showThumbs();
    ui.draw();
  };
  const onStep = () => {
    const g = generationOf(model);
    if (!g) return;
    const s = Number(step.input.value);
    link.setLocal("step", s);
    link.setLocal("query", stepQuery(g.P, s)); // sent with the step: the reply key names the query
    ui.sync();
    link.request();
    ui.showThumbs();
    ui.draw();
  };
  // hover follows the pointer's own moves only: a move of the page under a resting pointer
  // (the browser then reports a move at the same place) must not pick another token
  let at = "";
  const onMove = (ev: Event) => {
    const { clientX, clientY, target } = ev as MouseEvent;
    if (`${clientX},${clientY}` === at) return;
    at = `${clientX},${clientY}`;
    const i = tokenAt(target);
    if (i !== null) select(tv.selection.hover(i, model.get("query")));
  };
  const onClick = (ev: Event) => {
    const i = tokenAt(ev.target);
    if (i !== null) select(tv.selection.click(i, model.get("query")));
  };
  const onLeave = () => select(tv.selection.leave(model.get("query")));
  const onKey = (ev: Event) => {
    const { key } = ev as KeyboardEvent;
    if (!["ArrowLeft", "ArrowRight", "Escape"].includes(key)) return;
    ev.preventDefault();
    const q = tv.selection.key(key, model.get("query"), tv.spans.length);
    select(q);
    if (typeof q === "number") tv.spans[q]?.scrollIntoView({ block: "nearest" });
  };
  return [
    [step.input, "input", onStep], [tv.body, "mousemove", onMove], [tv.body, "click", onClick],
    [tv.body, "mouseleave", onLeave], [tv.body, "keydown", onKey],
  ];
}
