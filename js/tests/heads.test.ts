import { describe, expect, it } from "vitest";
import { fitLabel } from "../src/heads";

describe("a grid cell's label", () => {
  it("is the longest form that fits its cell, else the shortest (clipped by the canvas)", () => {
    const measure = (t: string) => 6 * t.length; // 6 px a character
    const labels = ["head 10 · MEDIUM · H 4.40", "head 10 · MEDIUM", "head 10"];
    expect(fitLabel(labels, 200, measure)).toBe(labels[0]);
    expect(fitLabel(labels, 110, measure)).toBe("head 10 · MEDIUM"); // 96 px: a 128-px grid cell
    expect(fitLabel(labels, 50, measure)).toBe("head 10"); // nothing fits: the last, clipped
  });
});
