import { describe, expect, it } from "vitest";
import { COLORMAPS, colorOf } from "../src/colormaps";
import { panelPixels, thinLabels } from "../src/heatmap";

describe("colormap", () => {
  it("has 256 viridis entries with the published end points", () => {
    expect(COLORMAPS.viridis.length).toBe(256 * 3);
    expect(colorOf(COLORMAPS.viridis, 0)).toEqual([0x44, 0x01, 0x54]);
    expect(colorOf(COLORMAPS.viridis, 255)).toEqual([0xfd, 0xe7, 0x24]);
    expect(colorOf(COLORMAPS.viridis, 999)).toEqual([0xfd, 0xe7, 0x24]); // clamped
  });

  it("maps each quantised cell to its RGBA pixel", () => {
    const px = panelPixels({ rows: 1, cols: 2, levels: new Uint8Array([0, 255]) }, COLORMAPS.viridis);
    expect(Array.from(px)).toEqual([0x44, 0x01, 0x54, 255, 0xfd, 0xe7, 0x24, 255]);
  });
});

describe("thinLabels", () => {
  it("keeps every label when cells are tall enough", () => {
    expect(thinLabels(5, 20)).toEqual([0, 1, 2, 3, 4]);
  });
  it("keeps labels at least 11 px apart when cells are small", () => {
    const kept = thinLabels(100, 4.2); // 420 px / 100 tokens
    expect(kept.slice(0, 3)).toEqual([0, 3, 6]);
    expect(kept.length).toBe(34);
  });
});
