import { describe, expect, it } from "vitest";
import { hintAblation, toggled } from "../src/interaction";
import { FakeModel } from "./fake_model";

describe("the ablation hint to the kernel", () => {
  it("names the heads a click would leave switched off, and the mode", () => {
    const m = new FakeModel({ layer: 2, head: 5, ablated: [[3, 1]], ablation_mode: "mean", can_ablate: true });
    expect(toggled(m, 2, 5)).toEqual([[2, 5], [3, 1]]);
    hintAblation(m, 5); // the ablate button: the selected head
    expect(m.messages).toEqual([{ type: "prepare_ablation", ablated: [[2, 5], [3, 1]], mode: "mean" }]);
    hintAblation(m, 7); // a thumbnail with shift held: that head of the shown layer
    expect(m.messages[1]).toEqual({ type: "prepare_ablation", ablated: [[2, 7], [3, 1]], mode: "mean" });
    m.attrs.ablated = [[2, 5], [3, 1]]; // shown now: the click would restore head 5 only
    hintAblation(m, 5);
    expect(m.messages[2]).toEqual({ type: "prepare_ablation", ablated: [[3, 1]], mode: "mean" });
  });

  it("sends nothing for a restore to the original record", () => {
    const m = new FakeModel({ layer: 2, head: 5, ablated: [[2, 5]], ablation_mode: "zero", can_ablate: true });
    expect(toggled(m, 2, 5)).toEqual([]);
    hintAblation(m, 5);
    expect(m.messages).toEqual([]);
  });

  it("sends nothing from a view of a record, which has no model to re-run", () => {
    const m = new FakeModel({ layer: 2, head: 5, ablated: [], ablation_mode: "zero", can_ablate: false });
    hintAblation(m, 5);
    expect(m.messages).toEqual([]);
  });
});
