/** The text view: the tokens as running text under the map, each shaded by the selected query's
 *  weight on it (or, with no query, by the attention it receives), with the map's colormap and
 *  threshold dimming. The levels come from Python (the `text_row` trait, the panel's codec and
 *  colour range), so at pool 1 a token's colour is exactly its cell's in the map's row.
 *
 *  Rendering: plain spans in a scrolled box, made once per token list and recoloured in one pass
 *  that writes only the spans whose colour changed (4096 tokens: see benchmarks/bench_textview.py).
 *  Token text is set with textContent only: it is user data, never HTML. */
import { decodePanel, MASKED, type Panel, type PanelMessage } from "./codec";
import { levelPalette, thresholdLevel } from "./heatmap";

/** CSS colours of every level: `fill` (background), `ink` (text on it); MASKED has neither. */
export interface TextPalette { fill: string[]; ink: string[] }

/** The text colours of the 256 levels: the map's own level colours (levelPalette, so dimming
 *  below the threshold is the same blend), with black or white text, whichever reads on it. */
export function textPalette(lut: Uint8Array, dimBelow: number, background: [number, number, number]): TextPalette {
  const rgba = levelPalette(lut, dimBelow, background);
  const fill: string[] = [];
  const ink: string[] = [];
  for (let level = 0; level < 256; level++) {
    const [r, g, b, a] = rgba.subarray(4 * level, 4 * level + 4);
    fill.push(a ? `rgb(${r}, ${g}, ${b})` : "");
    // perceived brightness (ITU-R BT.601 weights): dark fills get white text
    ink.push(a ? (0.299 * r + 0.587 * g + 0.114 * b > 140 ? "#000" : "#fff") : "");
  }
  return { fill, ink };
}

/** Indices whose level differs between two rows (all of them when there is no previous row). */
export function changedIndices(prev: Uint8Array | null, next: Uint8Array): number[] {
  const out: number[] = [];
  for (let i = 0; i < next.length; i++) if (!prev || prev[i] !== next[i]) out.push(i);
  return out;
}

/** Hover and pin: hovering a token selects it as the query, clicking pins it (hover then does
 *  nothing), clicking it again unpins; leaving the text unpinned restores the query from before.
 *  Each method returns the query to select, or `undefined` for no change. */
export class TextSelection {
  pinned: number | null = null;
  private before: number | null | undefined = undefined;

  hover(i: number, now: number | null): number | null | undefined {
    if (this.pinned !== null) return undefined;
    if (this.before === undefined) this.before = now;
    return i === now ? undefined : i;
  }

  click(i: number, now: number | null): number | null | undefined {
    if (this.pinned === i) {
      this.pinned = null;
      this.before = i; // unpinned under the pointer: leaving keeps the token selected
      return undefined;
    }
    this.pinned = i;
    this.before = undefined;
    return i === now ? undefined : i;
  }

  leave(now: number | null): number | null | undefined {
    const back = this.before;
    this.before = undefined;
    if (this.pinned !== null || back === undefined || back === now) return undefined;
    return back;
  }

  /** Keys on the focused text: ArrowLeft / ArrowRight move the query one token (pinned there, so
   *  the pointer does not take it away), Escape clears it. `n`: the number of tokens. */
  key(key: string, now: number | null, n: number): number | null | undefined {
    if (key === "ArrowRight" || key === "ArrowLeft") {
      const q = now === null ? 0 : Math.max(0, Math.min(n - 1, now + (key === "ArrowRight" ? 1 : -1)));
      this.pinned = q;
      this.before = undefined;
      return q === now ? undefined : q;
    }
    if (key === "Escape") {
      this.pinned = null;
      this.before = undefined;
      return now === null ? undefined : null;
    }
    return undefined;
  }

  /** The query was changed elsewhere (step control, map, Python): a pin on another token ends. */
  follow(now: number | null): void {
    if (this.pinned !== null && this.pinned !== now) this.pinned = null;
  }
}

/** The text view's elements and what it has painted. */
export interface TextView {
  box: HTMLDivElement;
  title: HTMLDivElement;
  body: HTMLDivElement;
  spans: HTMLSpanElement[];
  selection: TextSelection;
  /** The token list the spans were made for (by identity) and the generation start. */
  tokens: string[] | null;
  start: number | null;
  /** Levels and palette painted last, and the marked query and written token. */
  levels: Uint8Array | null;
  palette: TextPalette | null;
  /** The background each span was given last ("" for none, null before the first): a span is
   *  written only when it changes. */
  fills: (string | null)[];
  marked: number[];
}

export function buildTextView(): TextView {
  const box = document.createElement("div");
  box.className = "aw-text";
  box.setAttribute("role", "group");
  box.setAttribute("aria-label", "text view: hover a token to select it as the query, click to pin it; "
    + "focused, the arrow keys move the query and Escape clears it");
  const title = document.createElement("div");
  title.className = "aw-text-title";
  const body = document.createElement("div");
  body.className = "aw-text-body";
  body.tabIndex = 0;
  body.setAttribute("data-lm-suppress-shortcuts", "true"); // JupyterLab would take the arrow keys
  box.append(title, body);
  box.style.display = "none";
  return { box, title, body, spans: [], selection: new TextSelection(), tokens: null, start: null,
    levels: null, palette: null, fills: [], marked: [] };
}

/** (Re)make the spans, once per token list: one per token, the generation start marked before
 *  token `start` (null: not a generation). Built in a fragment, added in one step. */
export function setTokens(tv: TextView, tokens: string[], start: number | null): void {
  if (tv.tokens === tokens && tv.start === start) return;
  const frag = document.createDocumentFragment();
  tv.spans = tokens.map((t, i) => {
    const s = document.createElement("span");
    s.className = start !== null && i >= start ? "aw-t aw-gen" : "aw-t";
    s.dataset.i = String(i);
    s.textContent = t;
    return s;
  });
  tv.spans.forEach((s, i) => {
    if (i === start) {
      const mark = document.createElement("span");
      mark.className = "aw-gen-start";
      mark.textContent = "generated ▸";
      mark.title = `the model wrote the tokens from position ${start} on`;
      frag.append(mark);
    }
    // a line may break after any token and (unless one token is wider than the box) nowhere
    // inside one: the spans hold no spaces, so without <wbr> the whole text was one word
    frag.append(s, document.createElement("wbr"));
  });
  tv.body.replaceChildren(frag);
  tv.tokens = tokens;
  tv.start = start;
  tv.levels = tv.palette = null;
  tv.fills = tokens.map(() => null);
  tv.marked = [];
}

/** The token a pointer event is over (event delegation: one listener for all spans), or null. */
export function tokenAt(target: EventTarget | null): number | null {
  const el = target as HTMLElement | null;
  const i = el?.dataset?.i;
  return i === undefined ? null : Number(i);
}

/** The decoded row when it belongs to the shown map and query, else null (then the old colours
 *  stay, greyed as stale). `view` keys: attnwidget._messages.text_row_message. */
export function currentRow(msg: (PanelMessage & { view?: Record<string, unknown> }) | Record<string, never>,
  mapKey: string, query: number | null, keyOf: (view: Record<string, unknown>) => string): Panel | null {
  if (!msg || !("buffer" in msg) || !msg.view) return null;
  if (keyOf(msg.view) !== mapKey || (msg.view.query ?? null) !== query) return null;
  return decodePanel(msg as PanelMessage);
}

/** Shade the tokens by `row` (one pass, only what changed), mark the query and the token it
 *  wrote, and say in the title what the shading means. */
export function shadeText(tv: TextView, row: Panel | null, stale: boolean, lut: Uint8Array, threshold: number,
  background: [number, number, number], query: number | null, written: number | null, title: string): void {
  tv.box.classList.toggle("aw-is-stale", stale || !row);
  // written only when it changes: a text mutation would lay the 4096 spans out again
  if (tv.title.textContent !== title) tv.title.textContent = title;
  if (row && row.cols === tv.spans.length) {
    const palette = textPalette(lut, thresholdLevel(threshold, row.vmax), background);
    const samePalette = tv.palette !== null && tv.palette.fill.every((f, i) => f === palette.fill[i]);
    // same palette: only the levels that moved; a new one (threshold, colormap): every span, but
    // each written only if its colour changed (masked keys and undimmed weights keep theirs)
    const todo = samePalette ? changedIndices(tv.levels, row.levels) : row.levels.keys();
    for (const i of todo) {
      const level = row.levels[i];
      const fill = palette.fill[level];
      if (tv.fills[i] === fill) continue;
      const span = tv.spans[i];
      const was = tv.fills[i];
      if (was === null || (was === "") !== (fill === "")) span.classList.toggle("aw-masked", level === MASKED);
      tv.fills[i] = fill;
      span.style.backgroundColor = fill;
      span.style.color = palette.ink[level];
    }
    tv.levels = row.levels;
    tv.palette = palette;
  }
  for (const i of tv.marked) tv.spans[i]?.classList.remove("aw-query", "aw-written", "aw-pinned");
  tv.marked = [query, written].filter((i): i is number => i !== null && i < tv.spans.length);
  if (query !== null) tv.spans[query]?.classList.add("aw-query");
  if (query !== null && tv.selection.pinned === query) tv.spans[query]?.classList.add("aw-pinned");
  if (written !== null) tv.spans[written]?.classList.add("aw-written");
}
