import { describe, expect, it } from "vitest";
import { atlasPanel, decodeAtlas, decodePanel, type PanelMessage } from "../src/codec";

describe("decodePanel", () => {
  it("reads a uint8 view at a non-zero byte offset, not the whole buffer", () => {
    const backing = new Uint8Array([9, 9, 9, 0, 128, 255, 7, 9, 9]);
    const view = new DataView(backing.buffer, 3, 4);
    const panel = decodePanel({ buffer: view, dtype: "uint8", shape: [2, 2], vmax: 0.5, pool: 1 });
    expect(Array.from(panel.levels)).toEqual([0, 128, 255, 7]);
    expect([panel.rows, panel.cols, panel.vmax]).toEqual([2, 2, 0.5]);
    // the copy owns its bytes: later writes to the host buffer do not change the panel
    backing[3] = 42;
    expect(panel.levels[0]).toBe(0);
  });

  it("refuses an encoding other than uint8", () => {
    const msg = { buffer: new Uint8Array(16), dtype: "float32", shape: [2, 2] } as unknown as PanelMessage;
    expect(() => decodePanel(msg)).toThrow(/unknown dtype float32/);
  });

  it("keeps the pooling and the window a detail panel covers", () => {
    const panel = decodePanel({
      buffer: new Uint8Array(6), dtype: "uint8", shape: [2, 3], pool: 8, full_shape: [16, 20], origin: [4, 5],
      view: { mode: "head", layer: 1, head: 2 },
    });
    expect([panel.pool, panel.fullRows, panel.fullCols, panel.originRow, panel.originCol]).toEqual([8, 16, 20, 4, 5]);
    expect(panel.view).toEqual({ mode: "head", layer: 1, head: 2 });
  });

  it("refuses a buffer that does not match the shape", () => {
    const buffer = new Uint8Array([1, 2, 3]);
    expect(() => decodePanel({ buffer, dtype: "uint8", shape: [2, 2] })).toThrow(/expected 4 bytes/);
  });
});

describe("decodeAtlas", () => {
  it("splits one buffer into per-head thumbnails", () => {
    const backing = new Uint8Array([7, 1, 2, 3, 4, 5, 6, 7, 8]);
    const atlas = decodeAtlas({
      buffer: new DataView(backing.buffer, 1, 8), dtype: "uint8", shape: [2, 2, 2], layer: 3, pool: 1,
      badges: [],
    });
    expect(Array.from(atlasPanel(atlas, 1).levels)).toEqual([5, 6, 7, 8]);
    expect(atlas.layer).toBe(3);
    expect(() => decodeAtlas({ ...atlasMsg(), shape: [3, 2, 2] })).toThrow(/expected 12 bytes/);
  });
});

function atlasMsg() {
  return { buffer: new Uint8Array(8), dtype: "uint8" as const, shape: [2, 2, 2] as [number, number, number], layer: 0, pool: 1, badges: [] };
}
