import { describe, expect, it } from "vitest";
import { prepareAblation, toggled } from "../src/interaction";
import { FakeModel } from "./fake_model";

const button = (disabled: boolean) => ({ ablateButton: { disabled } as HTMLButtonElement });

describe("the ablate button's hint to the kernel", () => {
  it("names the heads a click would leave switched off, and the mode", () => {
    const m = new FakeModel({ layer: 2, head: 5, ablated: [[3, 1]], ablation_mode: "mean" });
    expect(toggled(m, 2, 5)).toEqual([[2, 5], [3, 1]]);
    prepareAblation(m, button(false));
    expect(m.messages).toEqual([{ type: "prepare_ablation", ablated: [[2, 5], [3, 1]], mode: "mean" }]);
    m.attrs.ablated = [[2, 5], [3, 1]]; // shown now: the click would restore head 5 only
    prepareAblation(m, button(false));
    expect(m.messages[1]).toEqual({ type: "prepare_ablation", ablated: [[3, 1]], mode: "mean" });
  });

  it("sends nothing for a restore to the original record or a disabled button", () => {
    const m = new FakeModel({ layer: 2, head: 5, ablated: [[2, 5]], ablation_mode: "zero" });
    expect(toggled(m, 2, 5)).toEqual([]);
    prepareAblation(m, button(false));
    m.attrs.ablated = [];
    prepareAblation(m, button(true));
    expect(m.messages).toEqual([]);
  });
});
