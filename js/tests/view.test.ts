import { describe, expect, it } from "vitest";
import { changed } from "../src/view";

describe("changed (what a canvas was last drawn from)", () => {
  it("says a canvas needs drawing only when an input is another object or value", () => {
    const canvas = {} as HTMLElement;
    const other = {} as HTMLElement;
    const panel = { rows: 2 };
    const tokens = ["a", "b"];
    expect(changed(canvas, [panel, tokens, 0.1])).toBe(true); // never drawn
    expect(changed(canvas, [panel, tokens, 0.1])).toBe(false); // the same objects: left as drawn
    expect(changed(other, [panel, tokens, 0.1])).toBe(true); // each canvas on its own
    expect(changed(canvas, [{ rows: 2 }, tokens, 0.1])).toBe(true); // a new panel, even if equal
    expect(changed(canvas, [{ rows: 2 }, tokens, 0.1])).toBe(true); // compared by identity
    const again = { rows: 3 };
    expect(changed(canvas, [again, tokens, 0.2])).toBe(true);
    expect(changed(canvas, [again, tokens, 0.2])).toBe(false);
    expect(changed(canvas, [again, tokens])).toBe(true); // fewer inputs: drawn again
    expect(changed(canvas, [again, tokens, undefined])).toBe(true);
    expect(changed(canvas, [again, tokens, undefined])).toBe(false);
  });
});
