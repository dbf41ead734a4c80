import { describe, expect, it } from "vitest";
import { decodePanel } from "../src/codec";

describe("decodePanel", () => {
  it("reads a uint8 view at a non-zero byte offset, not the whole buffer", () => {
    const backing = new Uint8Array([9, 9, 9, 0, 128, 255, 7, 9, 9]);
    const view = new DataView(backing.buffer, 3, 4);
    const panel = decodePanel({ buffer: view, dtype: "uint8", shape: [2, 2] });
    expect(Array.from(panel.levels)).toEqual([0, 128, 255, 7]);
    expect(panel.rows).toBe(2);
    expect(panel.cols).toBe(2);
  });

  it("reads float32 at an unaligned offset and quantises like the Python codec", () => {
    const values = new Float32Array([0, 1, 0.5, 0.002, 1.5, -1]);
    const backing = new Uint8Array(1 + values.byteLength);
    backing.set(new Uint8Array(values.buffer), 1); // offset 1: not 4-byte aligned
    const view = new DataView(backing.buffer, 1, values.byteLength);
    const panel = decodePanel({ buffer: view, dtype: "float32", shape: [2, 3] });
    expect(Array.from(panel.levels)).toEqual([0, 255, 128, 1, 255, 0]);
  });

  it("refuses a buffer that does not match the shape", () => {
    const buffer = new Uint8Array([1, 2, 3]);
    expect(() => decodePanel({ buffer, dtype: "uint8", shape: [2, 2] })).toThrow(/expected 4 bytes/);
  });
});
