import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { LEVELS, MASKED, type PanelMessage } from "../src/codec";
import { COLORMAPS } from "../src/colormaps";
import { stepQuery } from "../src/generation";
import { levelPalette, thresholdLevel } from "../src/heatmap";
import { panelKey } from "../src/state";
import {
  buildTextView, changedIndices, currentRow, setTokens, shadeText, TextSelection, textPalette, type TextView,
} from "../src/textview";
import { type FakeElement, type FakeStyle, installFakeDocument } from "./fake_dom";

describe("text palette", () => {
  it("gives every level the map's own colour, dimmed below the threshold the same way", () => {
    const bg: [number, number, number] = [255, 255, 255];
    for (const dim of [0, thresholdLevel(0.1, 0.4)]) {
      const rgba = levelPalette(COLORMAPS.magma, dim, bg);
      const { fill, ink } = textPalette(COLORMAPS.magma, dim, bg);
      for (let level = 0; level <= LEVELS; level++) {
        const [r, g, b] = rgba.subarray(4 * level, 4 * level + 3);
        expect(fill[level]).toBe(`rgb(${r}, ${g}, ${b})`);
        expect(["#000", "#fff"]).toContain(ink[level]);
      }
      // masked keys (after the query, causally) get no colour at all
      expect(fill[MASKED]).toBe("");
      expect(ink[MASKED]).toBe("");
    }
  });

  it("reads: white text on magma's black end, black on its pale end, black on a dimmed cell", () => {
    const { ink } = textPalette(COLORMAPS.magma, 100, [255, 255, 255]);
    expect(ink[LEVELS]).toBe("#000"); // pale yellow
    expect(ink[120]).toBe("#fff"); // a purple above the threshold
    expect(ink[10]).toBe("#000"); // dimmed toward the white background
  });
});

describe("changed indices", () => {
  it("lists every index first, then only those whose level moved", () => {
    const a = new Uint8Array([0, 5, 254, MASKED]);
    expect(changedIndices(null, a)).toEqual([0, 1, 2, 3]);
    expect(changedIndices(a, new Uint8Array([0, 6, 254, 3]))).toEqual([1, 3]);
    expect(changedIndices(a, a.slice())).toEqual([]);
  });
});

describe("hover and pin", () => {
  it("selects on hover, restores the query from before on leave", () => {
    const sel = new TextSelection();
    expect(sel.hover(4, null)).toBe(4);
    expect(sel.hover(4, 4)).toBeUndefined(); // same token: nothing to send
    expect(sel.hover(7, 4)).toBe(7);
    expect(sel.leave(7)).toBeNull(); // back to no query
    expect(sel.hover(2, 12)).toBe(2);
    expect(sel.leave(2)).toBe(12); // back to the step's query
    expect(sel.leave(12)).toBeUndefined();
  });

  it("pins on click (hover and leave then do nothing), unpins on a second click", () => {
    const sel = new TextSelection();
    sel.hover(3, null);
    expect(sel.click(3, 3)).toBeUndefined(); // already the query: only the pin changes
    expect(sel.pinned).toBe(3);
    expect(sel.hover(9, 3)).toBeUndefined();
    expect(sel.leave(3)).toBeUndefined();
    expect(sel.click(5, 3)).toBe(5); // another token: pinned there
    expect(sel.pinned).toBe(5);
    expect(sel.click(5, 5)).toBeUndefined(); // again: unpinned, still selected
    expect(sel.pinned).toBeNull();
    expect(sel.hover(6, 5)).toBe(6);
    expect(sel.leave(6)).toBe(5); // leaving after unpinning keeps the token that was pinned
  });

  it("moves the query by key, pinned there, within the tokens; Escape clears it", () => {
    const sel = new TextSelection();
    expect(sel.key("ArrowRight", null, 5)).toBe(0); // no query yet: the first token
    expect(sel.pinned).toBe(0);
    expect(sel.key("ArrowLeft", 0, 5)).toBeUndefined(); // already the first
    expect(sel.key("ArrowRight", 3, 5)).toBe(4);
    expect(sel.key("ArrowRight", 4, 5)).toBeUndefined(); // already the last
    expect(sel.hover(1, 4)).toBeUndefined(); // pinned by the keys: the pointer does not move it
    expect(sel.key("Escape", 4, 5)).toBeNull();
    expect(sel.pinned).toBeNull();
    expect(sel.key("Escape", null, 5)).toBeUndefined();
    expect(sel.key("a", 2, 5)).toBeUndefined();
  });

  it("ends a pin when the query is moved elsewhere (step control, map, Python)", () => {
    const sel = new TextSelection();
    sel.click(3, null);
    sel.follow(3);
    expect(sel.pinned).toBe(3);
    sel.follow(8);
    expect(sel.pinned).toBeNull();
  });
});

describe("current row", () => {
  const view = { mode: "head", layer: 1, head: 2, ablated: [] as number[][] };
  const msg = (query: number | null): PanelMessage & { view: Record<string, unknown> } => ({
    buffer: new Uint8Array([10, 254, MASKED]), dtype: "uint8", shape: [1, 3], vmax: 0.5, view: { ...view, query },
  });
  const key = (v: Record<string, unknown>) => panelKey(v as typeof view);

  it("decodes the row when it belongs to the shown map and query", () => {
    const row = currentRow(msg(1), panelKey(view), 1, key);
    expect(row && Array.from(row.levels)).toEqual([10, 254, MASKED]);
    expect(row?.vmax).toBe(0.5);
    expect(row?.cols).toBe(3);
  });

  it("refuses a row of another query, another head, or none", () => {
    expect(currentRow(msg(1), panelKey(view), 2, key)).toBeNull();
    expect(currentRow(msg(null), panelKey(view), 1, key)).toBeNull();
    expect(currentRow(msg(1), panelKey({ ...view, head: 3 }), 1, key)).toBeNull();
    expect(currentRow({}, panelKey(view), 1, key)).toBeNull();
  });
});

describe("steps", () => {
  it("maps step i to query prompt_length + i - 1 (attnwidget.generate)", () => {
    expect(stepQuery(13, 0)).toBe(12);
    expect(stepQuery(13, 6)).toBe(18);
  });
});

describe("text view DOM (a fake document)", () => {
  let remove: () => void = () => {};
  beforeEach(() => { remove = installFakeDocument(); });
  afterEach(() => remove());

  const tokens = ["a", "<img src=x onerror=alert(1)>", "b", "c", "⟨ZWSP⟩"];
  const panel = (levels: number[], vmax = 0.5) => ({
    rows: 1, cols: levels.length, levels: new Uint8Array(levels), vmax, sqrt: false, pool: 1, fullRows: 1, fullCols: levels.length,
    originRow: 0, originCol: 0, view: null,
  });
  const spansOf = (tv: TextView) => tv.body.children as unknown as FakeElement[];

  it("makes one span per token, as text, and marks the generation start before token P", () => {
    const tv = buildTextView();
    setTokens(tv, tokens, 3);
    // a <wbr> after each token: a line breaks between tokens, not inside one
    expect(spansOf(tv).map((k) => k.tagName)).toEqual(
      ["span", "wbr", "span", "wbr", "span", "wbr", "span", "span", "wbr", "span", "wbr"]);
    const kids = spansOf(tv).filter((k) => k.tagName === "span");
    expect(kids.map((k) => k.className)).toEqual(["aw-t", "aw-t", "aw-t", "aw-gen-start", "aw-t aw-gen", "aw-t aw-gen"]);
    expect(kids[3].textContent).toBe("generated ▸");
    expect(kids[4].dataset.i).toBe("3");
    expect(tv.spans.map((s) => s.textContent)).toEqual(tokens); // markup stays text
    // the same token list again: nothing is rebuilt
    const first = tv.spans[0];
    setTokens(tv, tokens, 3);
    expect(tv.spans[0]).toBe(first);
    // no generation: no mark
    const plain = buildTextView();
    setTokens(plain, tokens, null);
    expect(spansOf(plain).some((k) => k.className === "aw-gen-start")).toBe(false);
  });

  it("colours each span with its level's colour, masks what is masked, and repaints only what changed", () => {
    const tv = buildTextView();
    setTokens(tv, tokens, 3);
    const bg: [number, number, number] = [255, 255, 255];
    shadeText(tv, panel([254, 127, 0, MASKED, MASKED]), false, COLORMAPS.viridis, 0, bg, 2, 3, "t");
    const { fill, ink } = textPalette(COLORMAPS.viridis, 0, bg);
    expect(tv.spans.map((s) => s.style.backgroundColor)).toEqual([fill[254], fill[127], fill[0], "", ""]);
    expect(tv.spans.map((s) => s.style.color)).toEqual([ink[254], ink[127], ink[0], "", ""]);
    expect(tv.spans.map((s) => s.classList.contains("aw-masked"))).toEqual([false, false, false, true, true]);
    expect(tv.spans[2].classList.contains("aw-query")).toBe(true);
    expect(tv.spans[3].classList.contains("aw-written")).toBe(true);
    const writes = () => tv.spans.map((s) => (s.style as unknown as FakeStyle).writes);
    const before = writes();
    // the next row differs at 1 and 3 only: only those spans are written
    shadeText(tv, panel([254, 60, 0, 12, MASKED]), false, COLORMAPS.viridis, 0, bg, 3, 4, "t");
    expect(writes().map((w, i) => w - before[i])).toEqual([0, 2, 0, 2, 0]);
    expect(tv.spans[2].classList.contains("aw-query")).toBe(false); // the marks moved
    expect(tv.spans[3].classList.contains("aw-query")).toBe(true);
    // a threshold change changes the palette: the spans below it are written again, dimmed; the
    // one above it and the masked one keep their colours and are not touched
    const again = writes();
    shadeText(tv, panel([254, 60, 0, 12, MASKED]), false, COLORMAPS.viridis, 0.2, bg, 3, 4, "t");
    expect(writes().map((w, i) => w - again[i])).toEqual([0, 2, 2, 2, 0]);
    const dimmed = textPalette(COLORMAPS.viridis, thresholdLevel(0.2, 0.5), bg);
    expect(tv.spans[1].style.backgroundColor).toBe(dimmed.fill[60]);
    expect(tv.spans[0].style.backgroundColor).toBe(fill[254]); // above the threshold: unchanged
  });

  it("keeps the old colours, marked stale, when no current row is there", () => {
    const tv = buildTextView();
    setTokens(tv, tokens, null);
    shadeText(tv, panel([254, 127, 0, 10, 20]), false, COLORMAPS.viridis, 0, [255, 255, 255], null, null, "t");
    const colours = tv.spans.map((s) => s.style.backgroundColor);
    shadeText(tv, null, true, COLORMAPS.viridis, 0, [255, 255, 255], 1, null, "t");
    expect(tv.spans.map((s) => s.style.backgroundColor)).toEqual(colours);
    expect(tv.box.classList.contains("aw-is-stale")).toBe(true);
  });
});
