/** Sliders, selects, the metrics panel and the head strip. Builds DOM with textContent only:
 *  every token and every value is user data or a number, never HTML. */
import type { Badge } from "./codec";

export interface Slider {
  box: HTMLLabelElement;
  input: HTMLInputElement;
  value: HTMLSpanElement;
}

export function slider(name: string, step: string): Slider {
  const box = document.createElement("label");
  box.className = `aw-control aw-${name}`;
  const title = document.createElement("span");
  title.textContent = name;
  const input = document.createElement("input");
  input.type = "range";
  input.step = step;
  input.min = "0";
  input.className = `aw-slider-${name}`;
  // JupyterLab's command-mode shortcuts would swallow arrow keys on a focused slider
  input.setAttribute("data-lm-suppress-shortcuts", "true");
  const value = document.createElement("span");
  value.className = "aw-value";
  box.append(title, input, value);
  return { box, input, value };
}

export function select(name: string, options: string[]): { box: HTMLLabelElement; input: HTMLSelectElement } {
  const box = document.createElement("label");
  box.className = `aw-control aw-${name}`;
  const title = document.createElement("span");
  title.textContent = name;
  const input = document.createElement("select");
  input.className = `aw-select-${name}`;
  input.setAttribute("data-lm-suppress-shortcuts", "true");
  for (const o of options) {
    const opt = document.createElement("option");
    opt.value = o;
    opt.textContent = o;
    input.append(opt);
  }
  box.append(title, input);
  return { box, input };
}

/** A push button of the control bar (its text is ours, never user data). */
export function button(name: string, label: string): HTMLButtonElement {
  const b = document.createElement("button");
  b.type = "button";
  b.className = `aw-control aw-${name}`;
  b.textContent = label;
  return b;
}

/** A number as shown in the panel: 4 significant digits, no trailing zeros; None as a dash. */
export function fmt(v: unknown): string {
  if (typeof v !== "number") return v === null || v === undefined ? "–" : String(v);
  if (!Number.isFinite(v)) return String(v);
  return String(Number(v.toPrecision(4)));
}

/** What the metrics panel lists, in order: key in the metrics dict -> label. */
export const METRIC_ROWS: [string, string][] = [
  ["mean_entropy", "mean entropy (nats)"],
  ["normalized_entropy", "normalised entropy"],
  ["sparsity", "sparsity"],
  ["sparsity_gini", "Gini"],
  ["effective_tokens", "effective tokens"],
  ["max", "max weight"],
  ["diagonal_mean", "diagonal mean"],
  ["sharpness", "sharpness"],
];

export interface QueryBlock {
  index: number;
  masked: boolean;
  top_k: number[];
  top_k_weights: number[];
  row: number[];
  entropy: number;
  normalized_entropy: number | null;
}

/** A head's median and quartiles over a corpus (attnwidget.corpus.HeadSummary.typical). */
export interface Typical { median: number | null; q25: number | null; q75: number | null }

export type Metrics = Record<string, unknown> & {
  view?: Record<string, unknown>;
  scores?: Record<string, number | null>;
  query?: QueryBlock;
  typical?: Record<string, Typical | number | string>;
};

/** "value · typical median (q25–q75)" when the view has a corpus summary for this statistic. */
function withTypical(value: string, t: unknown): string {
  if (!t || typeof t !== "object" || !("median" in t)) return value;
  const { median, q25, q75 } = t as Typical;
  return `${value} · typical ${fmt(median)} (${fmt(q25)}–${fmt(q75)})`;
}

/** One labelled row of a metrics table (text only). */
export function row(table: HTMLElement, key: string, label: string, value: string): void {
  const tr = document.createElement("tr");
  tr.dataset.key = key;
  const th = document.createElement("th");
  th.textContent = label;
  const td = document.createElement("td");
  td.className = "aw-metric-value";
  td.textContent = value;
  tr.append(th, td);
  table.append(tr);
}

/** Append the metrics panel's content for a metrics dict to `box` (a fresh container, which
 *  dom.ts's `morph` then writes into the page); the caller draws the row plot's canvas. */
export function renderMetrics(box: HTMLElement, m: Metrics, keyTokens: string[], queryTokens: string[]): void {
  const head = document.createElement("div");
  head.className = "aw-metrics-title";
  head.textContent = `${String(m.kind ?? "head")}: ${String(m.pattern ?? "")} · ${String(m.grade ?? "")}`;
  box.append(head);
  const table = document.createElement("table");
  table.className = "aw-metrics-table";
  for (const [key, label] of METRIC_ROWS) {
    const shown = key === "sparsity" ? `${label} (< ${fmt(m.threshold)})` : label;
    row(table, key, shown, withTypical(fmt(m[key]), m.typical?.[key]));
  }
  if (m.typical) {
    row(table, "typical", "typical: median (quartiles) over", `${fmt(m.typical.n_sequences)} sequences of ${String(m.typical.corpus ?? "")}`);
  }
  row(table, "pattern", "pattern", String(m.pattern ?? "–"));
  row(table, "grade", "grade", String(m.grade ?? "–"));
  box.append(table);

  const scores = document.createElement("details");
  scores.className = "aw-scores";
  const summary = document.createElement("summary");
  summary.textContent = "pattern scores";
  const st = document.createElement("table");
  for (const [name, v] of Object.entries(m.scores ?? {})) row(st, `score-${name}`, name, fmt(v));
  scores.append(summary, st);
  box.append(scores);

  const q = m.query;
  if (!q) {
    const hint = document.createElement("div");
    hint.className = "aw-hint";
    hint.textContent = "Click a row to select a query.";
    box.append(hint);
    return;
  }
  const qt = document.createElement("div");
  qt.className = "aw-query-title";
  const tok = document.createElement("bdi");
  tok.textContent = queryTokens[q.index] ?? "";
  qt.append(`query ${q.index} “`, tok, "”" + (q.masked ? " (fully masked)" : ""));
  box.append(qt);
  const qtable = document.createElement("table");
  qtable.className = "aw-query-table";
  row(qtable, "query-entropy", "entropy (nats)", fmt(q.entropy));
  row(qtable, "query-normalized_entropy", "normalised entropy", fmt(q.normalized_entropy));
  q.top_k.forEach((k, i) => row(qtable, `top-${i}`, `#${i + 1} key ${k} “${keyTokens[k] ?? ""}”`, fmt(q.top_k_weights[i])));
  box.append(qtable);
  const plot = document.createElement("canvas");
  plot.className = "aw-row-plot";
  plot.setAttribute("aria-label", "attention of the selected query over the key positions");
  box.append(plot);
}

/** Label under a head thumbnail: name, grade and mean entropy. */
export function badgeText(b: Badge & { typical?: { entropy: Typical } }): string {
  const typical = b.typical?.entropy.median;
  return `${b.name} · ${b.grade} · H ${b.entropy.toFixed(2)}` + (typeof typical === "number" ? ` (typ. ${typical.toFixed(2)})` : "");
}

/** What an ablation changed; mirrors attnwidget.ablate.ablated_record's summary. */
export type Effect = Record<string, never> | {
  heads: number[][];
  mode: string;
  metric: string;
  score: number;
  attention_change_by_layer: number[];
  loss?: number;
  loss_ablated?: number;
  embedding_cosine?: number;
  top_predictions?: [string, number][];
  top_predictions_ablated?: [string, number][];
};

/** The ablation block under the metrics, appended to `box`: which heads are off and what it did
 *  (numbers from Python). With none ablated, nothing; or, where an effect was shown before and
 *  its room is kept (`kept`, dom.ts keepRoom), a line that says none is. */
export function renderEffect(box: HTMLElement, e: Effect, kept = false): void {
  if (!e || !("heads" in e) || e.heads.length === 0) {
    if (kept) {
      const none = document.createElement("div");
      none.className = "aw-effect-title aw-effect-none";
      none.textContent = "no head ablated";
      box.append(none);
    }
    return;
  }
  const title = document.createElement("div");
  title.className = "aw-effect-title";
  title.textContent = `ablated (${e.mode}): ` + e.heads.map(([l, h]) => `L${l} H${h}`).join(", ");
  box.append(title);
  const table = document.createElement("table");
  table.className = "aw-effect-table";
  row(table, "effect-score", e.metric, fmt(e.score));
  if (e.loss !== undefined) row(table, "effect-loss", "next-token loss before → after", `${fmt(e.loss)} → ${fmt(e.loss_ablated)}`);
  if (e.embedding_cosine !== undefined) row(table, "effect-cosine", "embedding cosine to original", fmt(e.embedding_cosine));
  e.attention_change_by_layer.forEach((v, l) => row(table, `effect-layer-${l}`, `attention change, layer ${l}`, fmt(v)));
  if (e.top_predictions && e.top_predictions_ablated) {
    const show = (p: [string, number][]) => p.slice(0, 3).map(([t, v]) => `${t} ${fmt(v)}`).join(", ");
    row(table, "effect-top", "next token before", show(e.top_predictions));
    row(table, "effect-top-ablated", "next token after", show(e.top_predictions_ablated));
  }
  box.append(table);
}
