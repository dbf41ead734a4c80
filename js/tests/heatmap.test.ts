import { describe, expect, it } from "vitest";
import { MASKED } from "../src/codec";
import { COLORMAPS, colorOf, DIVERGING, lutOf } from "../src/colormaps";
import { fmt } from "../src/controls";
import { bucketMax } from "../src/heads";
import {
  cellAt, clampViewport, DIM_KEEP, formatTick, formatWeight, fullViewport, layoutOf, MARGIN_LEFT, MARGIN_TOP,
  panelPixels, PLOT_PX, scalePosition, sqrtTicks, thinLabels, thresholdLevel, weightOfLevel, zoomViewport,
} from "../src/heatmap";
import { replyKey, stateKey } from "../src/state";

describe("colormaps", () => {
  it("has 256 entries per map with the published end points", () => {
    for (const name of ["viridis", "magma", "inferno", "cividis", "greys"]) expect(COLORMAPS[name].length).toBe(256 * 3);
    expect(colorOf(COLORMAPS.viridis, 0)).toEqual([0x44, 0x01, 0x54]);
    expect(colorOf(COLORMAPS.viridis, 255)).toEqual([0xfd, 0xe7, 0x24]);
    expect(colorOf(COLORMAPS.magma, 0)).toEqual([0x00, 0x00, 0x03]);
    expect(colorOf(COLORMAPS.viridis, 999)).toEqual([0xfd, 0xe7, 0x24]); // clamped
    // grey scale: no weight is white, the strongest is black
    expect(colorOf(COLORMAPS.greys, 0)).toEqual([255, 255, 255]);
    expect(colorOf(COLORMAPS.greys, 255)).toEqual([0, 0, 0]);
    expect(lutOf("nope")).toBe(COLORMAPS.viridis);
    // difference maps: blue for B larger, near-white for equal, red for A larger
    expect(colorOf(DIVERGING, 0)).toEqual([33, 102, 172]);
    expect(colorOf(DIVERGING, 255)).toEqual([178, 24, 43]);
    const mid = colorOf(DIVERGING, 127.5);
    expect(Math.min(...mid)).toBeGreaterThan(240);
  });

  it("maps levels 0..254 onto the whole table and leaves masked cells transparent", () => {
    const px = panelPixels({ rows: 1, cols: 3, levels: new Uint8Array([0, 254, MASKED]) }, COLORMAPS.viridis);
    expect(Array.from(px)).toEqual([0x44, 0x01, 0x54, 255, 0xfd, 0xe7, 0x24, 255, 0, 0, 0, 0]);
  });
});

describe("threshold dimming", () => {
  it("dims exactly the cells whose level is below threshold / vmax * 254", () => {
    // vmax 0.5: level 127 is weight 0.25; threshold 0.25 -> dim below level 127
    const dim = thresholdLevel(0.25, 0.5);
    expect(dim).toBe(127);
    const px = panelPixels({ rows: 1, cols: 3, levels: new Uint8Array([126, 127, 254]) }, COLORMAPS.greys, dim, [255, 0, 0]);
    const [r, g, b] = colorOf(COLORMAPS.greys, (126 * 255) / 254);
    // dimmed: blended toward the background (red here) keeping DIM_KEEP of the colour
    expect(Array.from(px.slice(0, 3))).toEqual([
      Math.round(r * DIM_KEEP + 255 * (1 - DIM_KEEP)), Math.round(g * DIM_KEEP), Math.round(b * DIM_KEEP),
    ]);
    expect(Array.from(px.slice(4, 7))).toEqual(colorOf(COLORMAPS.greys, (127 * 255) / 254)); // at the threshold: kept
    expect(Array.from(px.slice(8, 11))).toEqual([0, 0, 0]);
  });

  it("dims nothing at threshold 0 and everything below vmax at threshold 1 when vmax < 1", () => {
    expect(thresholdLevel(0, 0.3)).toBe(0);
    const px = panelPixels({ rows: 1, cols: 1, levels: new Uint8Array([254]) }, COLORMAPS.greys, thresholdLevel(1, 0.3), [255, 255, 255]);
    expect(px[0]).toBe(Math.round(255 * (1 - DIM_KEEP)));
  });
});

describe("the square-root scale", () => {
  it("dims, places and reads back levels as Python encodes them (level = sqrt(w / vmax) * 254)", () => {
    // vmax 0.8: weight 0.2 is half-way up a square-root scale (level 127), 0.05 a quarter (63.5)
    expect(thresholdLevel(0.2, 0.8, true)).toBeCloseTo(127, 10);
    expect(scalePosition(0.05, 0.8, true)).toBeCloseTo(0.25, 12);
    expect(weightOfLevel(127, 0.8, true)).toBeCloseTo(0.2, 12);
    expect(weightOfLevel(127, 0.8)).toBeCloseTo(0.4, 12); // the linear scale as before
    expect(scalePosition(-1, 0.8, true)).toBe(0);
  });

  it("ticks its colour bar at round weights up to near the top, as the static figures do", () => {
    expect(sqrtTicks(0.3, 4)).toEqual([0, 0.02, 0.1, 0.2]); // attnwidget/plots/_matrix.py sqrt_ticks
    for (const high of [1e-7, 0.003, 0.05, 0.8, 1, 100]) {
      const marks = sqrtTicks(high, 4);
      expect(marks[0]).toBe(0);
      expect(Math.sqrt(marks[marks.length - 1] / high)).toBeGreaterThanOrEqual(0.6);
      for (let i = 1; i < marks.length; i++) expect(marks[i]).toBeGreaterThan(marks[i - 1]);
    }
    expect(sqrtTicks(0, 4)).toEqual([0]);
  });

  it("writes its ticks in one style: decimals down to 0.001, a map's own maximum to three digits", () => {
    expect([0, 0.002, 0.01, 0.02, 0.05].map(formatTick)).toEqual(["0", "0.002", "0.01", "0.02", "0.05"]);
    expect(formatTick(0.052341)).toBe("0.0523"); // a linear bar's top: vmax itself
    expect(formatTick(0.8)).toBe("0.8");
    expect(formatTick(4e-4)).toBe("4.0e-4");
    expect(formatWeight(0.002)).toBe("2.00e-3"); // a weight read off the map keeps its three digits
  });
});

describe("thinLabels", () => {
  it("keeps every label when cells are tall enough", () => {
    expect(thinLabels(5, 20)).toEqual([0, 1, 2, 3, 4]);
  });
  it("keeps labels at least 11 px apart when cells are small", () => {
    const kept = thinLabels(100, 4.2);
    expect(kept.slice(0, 3)).toEqual([0, 3, 6]);
    expect(kept.length).toBe(34);
  });
  it("keeps the same tokens labelled while panning (positions on the step grid)", () => {
    expect(thinLabels(20, 4, 5)).toEqual([6, 9, 12, 15, 18]);
  });
});

describe("viewport", () => {
  it("zooms around the cursor's cell and stays inside the map", () => {
    const vp = zoomViewport(fullViewport(4096, 4096), 4096, 4096, 1000, 3000, 4);
    expect(vp.q1 - vp.q0).toBeCloseTo(1024);
    // the point under the cursor keeps its relative place
    expect((1000 - vp.q0) / (vp.q1 - vp.q0)).toBeCloseTo(1000 / 4096);
    const out = zoomViewport(vp, 4096, 4096, 1000, 3000, 0.01);
    expect(out).toEqual(fullViewport(4096, 4096));
  });

  it("clamps a pan at the edges without changing the window size", () => {
    expect(clampViewport({ q0: -5, q1: 15, k0: 95, k1: 115 }, 100, 100)).toEqual({ q0: 0, q1: 20, k0: 80, k1: 100 });
  });

  it("finds the cell under the pointer", () => {
    const layout = layoutOf({ q0: 10, q1: 20, k0: 0, k1: 10 });
    expect(layout.cell).toBe(PLOT_PX / 10);
    expect(cellAt(layout, MARGIN_LEFT + 1.5 * layout.cell, MARGIN_TOP + 0.2 * layout.cell)).toEqual({ q: 10, k: 1 });
    expect(cellAt(layout, MARGIN_LEFT - 1, MARGIN_TOP)).toBeNull();
  });
});

describe("row plot and numbers", () => {
  it("keeps each bucket's maximum so one sharp key still shows", () => {
    const row = new Array(4096).fill(0);
    row[2049] = 0.9;
    const b = bucketMax(row, 100);
    expect(b.length).toBe(100);
    expect(Math.max(...b)).toBe(0.9);
  });

  it("formats numbers with 4 significant digits", () => {
    expect(fmt(0.5)).toBe("0.5");
    expect(fmt(1.23456)).toBe("1.235");
    expect(fmt(null)).toBe("–");
  });

  it("matches the view key the Python metrics carry", () => {
    const state = { mode: "average", layer: 2, head: 5, threshold: 0.15, query: null, top_k: 5 };
    // AttentionView._send_metrics: head is None outside the head and grid modes
    expect(stateKey(state)).toBe(replyKey({ mode: "average", layer: 2, head: null, threshold: 0.15, query: null, top_k: 5, ablated: [] }));
    expect(stateKey({ ...state, mode: "head" })).not.toBe(replyKey({ mode: "head", layer: 2, head: null, threshold: 0.15, query: null, top_k: 5, ablated: [] }));
    // a reply made before an ablation is not the reply for the ablated state
    expect(stateKey({ ...state, ablated: [[1, 3]] })).not.toBe(replyKey({ mode: "average", layer: 2, head: null, threshold: 0.15, query: null, top_k: 5, ablated: [] }));
    expect(stateKey({ ...state, ablated: [[1, 3]] })).toBe(replyKey({ mode: "average", layer: 2, head: null, threshold: 0.15, query: null, top_k: 5, ablated: [[1, 3]] }));
  });
});
