import { describe, expect, it } from "vitest";
import { fitLabel, gridLayout, headAt } from "../src/heads";

describe("a grid cell's label", () => {
  it("is the longest form that fits its cell, else the shortest (clipped by the canvas)", () => {
    const measure = (t: string) => 6 * t.length; // 6 px a character
    const labels = ["head 10 · MEDIUM · H 4.40", "head 10 · MEDIUM", "head 10"];
    expect(fitLabel(labels, 200, measure)).toBe(labels[0]);
    expect(fitLabel(labels, 110, measure)).toBe("head 10 · MEDIUM"); // 96 px: a 128-px grid cell
    expect(fitLabel(labels, 50, measure)).toBe("head 10"); // nothing fits: the last, clipped
  });
});

describe("a click on the head grid", () => {
  it("picks the head whose thumbnail or label (under it) is clicked; the line above picks none", () => {
    const grid = gridLayout(12, 512); // 4 x 128-px cells under a 14-px line
    expect(headAt(grid, 10, 5)).toBe(null); // the line that says how to read the grid
    expect(headAt(grid, 10, 14 + 60)).toBe(0); // head 0's thumbnail
    expect(headAt(grid, 10, 14 + 123)).toBe(0); // head 0's label, not head 4's
    expect(headAt(grid, 10, 14 + 2 * 128 + 123)).toBe(8); // the last row's label
    expect(headAt(grid, 3 * 128 + 10, 14 + 128 + 10)).toBe(7);
    expect(headAt(grid, 10, 14 + 3 * 128 + 1)).toBe(null); // below the grid
  });
});
