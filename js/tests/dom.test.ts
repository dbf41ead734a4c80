// @vitest-environment jsdom
import { afterEach, describe, expect, it, vi } from "vitest";
import { renderEffect, renderMetrics } from "../src/controls";
import { keepRoom, morph, setText } from "../src/dom";

const metrics = (entropy: number, scores: Record<string, number>) => ({
  kind: "head", pattern: "local", grade: "SHARP", mean_entropy: entropy, normalized_entropy: 0.5, sparsity: 0.9,
  threshold: 0.1, sparsity_gini: 0.8, effective_tokens: 3, max: 0.7, diagonal_mean: 0.2, sharpness: 0.1, scores,
  query: { index: 1, masked: false, top_k: [0, 1], top_k_weights: [0.6, 0.4], row: [0.6, 0.4], entropy: 0.67,
    normalized_entropy: 0.97 },
});

function rendered(m: ReturnType<typeof metrics>): HTMLDivElement {
  const fresh = document.createElement("div");
  renderMetrics(fresh, m, ["a", "b"], ["a", "b"]);
  return fresh;
}

describe("morph", () => {
  it("keeps the nodes, writes only the text that changed and keeps what the reader opened", () => {
    const box = document.createElement("div");
    morph(box, rendered(metrics(1.25, { local: 0.9, diagonal: 0.1 })));
    const table = box.querySelector("table")!;
    const details = box.querySelector("details")!;
    const canvas = box.querySelector("canvas")!;
    details.open = true; // the reader opened "pattern scores"
    canvas.width = 300; // sized by the code that draws it
    const html = box.innerHTML;
    const writes: MutationRecord[] = [];
    const observer = new MutationObserver((r) => writes.push(...r));
    observer.observe(box, { subtree: true, childList: true, characterData: true, attributes: true });

    morph(box, rendered(metrics(1.25, { local: 0.9, diagonal: 0.1 }))); // the same numbers
    observer.takeRecords().forEach((r) => writes.push(r));
    expect(writes).toEqual([]);
    expect(box.innerHTML).toBe(html);

    morph(box, rendered(metrics(2.5, { local: 0.9, diagonal: 0.1 })));
    writes.push(...observer.takeRecords());
    observer.disconnect();
    expect(writes.map((r) => r.type)).toEqual(["characterData"]); // one number, one text node
    expect(box.querySelector("table")).toBe(table);
    expect(box.querySelector('tr[data-key="mean_entropy"] td')!.textContent).toBe("2.5");
    expect(box.querySelector("details")).toBe(details);
    expect(details.open).toBe(true);
    expect(box.querySelector("canvas")).toBe(canvas);
    expect(canvas.width).toBe(300);
  });

  it("replaces what changed kind, adds and removes rows, and ends equal to a fresh build", () => {
    const box = document.createElement("div");
    morph(box, rendered(metrics(1, { local: 0.9, diagonal: 0.1, block: 0.3 })));
    const fewer = rendered(metrics(1, { local: 0.9 }));
    morph(box, fewer.cloneNode(true) as HTMLDivElement);
    expect(box.innerHTML).toBe(fewer.innerHTML);
    const more = rendered(metrics(3, { local: 0.2, diagonal: 0.5, block: 0.1, broadcast: 0 }));
    morph(box, more.cloneNode(true) as HTMLDivElement);
    expect(box.innerHTML).toBe(more.innerHTML);

    const other = document.createElement("div");
    other.append(document.createElement("p"), "plain text");
    morph(box, other.cloneNode(true) as HTMLDivElement);
    expect(box.innerHTML).toBe("<p></p>plain text");
    morph(box, document.createElement("div"));
    expect(box.childNodes.length).toBe(0);
  });

  it("writes changed attributes whether or not the fresh copy lists them in the same order", () => {
    const box = document.createElement("div");
    const row = (attrs: [string, string][]) => {
      const fresh = document.createElement("div");
      const span = document.createElement("span");
      for (const [k, v] of attrs) span.setAttribute(k, v);
      fresh.append(span);
      return fresh;
    };
    morph(box, row([["class", "a"], ["title", "t"]]));
    const span = box.querySelector("span")!;
    morph(box, row([["class", "b"], ["title", "t"]])); // same names, one value changed
    expect(span.getAttribute("class")).toBe("b");
    morph(box, row([["title", "u"], ["class", "b"]])); // another order
    expect([span.getAttribute("class"), span.getAttribute("title")]).toEqual(["b", "u"]);
    morph(box, row([["data-x", "1"], ["class", "b"]])); // as many, another name
    expect([span.hasAttribute("title"), span.getAttribute("data-x"), span.getAttribute("class")]).toEqual([false, "1", "b"]);
    expect(box.querySelector("span")).toBe(span);
  });

  it("renders token text as text", () => {
    const box = document.createElement("div");
    const fresh = document.createElement("div");
    const hostile = "<img src=x onerror=alert(1)>";
    renderMetrics(fresh, metrics(1, {}), [hostile, "b"], [hostile, hostile]);
    morph(box, fresh);
    expect(box.querySelector("img")).toBeNull();
    expect(box.textContent).toContain(hostile);
  });
});

describe("setText", () => {
  it("does not touch a node whose text is already right", () => {
    const el = document.createElement("span");
    setText(el, "3 / 11");
    const node = el.firstChild;
    setText(el, "3 / 11");
    expect(el.firstChild).toBe(node);
    setText(el, "4 / 11");
    expect(el.textContent).toBe("4 / 11");
  });
});

describe("keepRoom (the effect's room, kept across toggles)", () => {
  // jsdom lays nothing out: a stand-in ResizeObserver reports the heights a browser would
  let report: (height: number) => void = () => {};
  let observed: Element[] = [];
  let disconnected = 0;
  class FakeResizeObserver {
    constructor(cb: (entries: { contentRect: { height: number } }[]) => void) {
      report = (height) => cb([{ contentRect: { height } }]);
    }
    observe(el: Element) { observed.push(el); }
    disconnect() { disconnected++; }
  }
  afterEach(() => { vi.unstubAllGlobals(); observed = []; disconnected = 0; });

  const effect = { heads: [[2, 9]], mode: "zero", metric: "1 - cosine of the sentence embedding", score: 0.0123,
    attention_change_by_layer: [0, 0, 0, 0.01, 0.02, 0.03], embedding_cosine: 0.9877 };

  it("reserves nothing before any content, then never shrinks", () => {
    vi.stubGlobal("ResizeObserver", FakeResizeObserver);
    const box = document.createElement("div");
    const stop = keepRoom(box);
    expect(observed).toEqual([box]);
    expect(box.style.minHeight).toBe(""); // a view never ablated keeps no blank room
    report(0);
    expect(box.style.minHeight).toBe("");
    report(151.5); // the effect table came
    expect(box.style.minHeight).toBe("152px");
    report(18); // restored: one line left, the room stays
    expect(box.style.minHeight).toBe("152px");
    report(170); // more heads off: a longer title
    expect(box.style.minHeight).toBe("170px");
    stop();
    expect(disconnected).toBe(1);
  });

  it("without ResizeObserver reserves nothing", () => {
    vi.stubGlobal("ResizeObserver", undefined);
    const box = document.createElement("div");
    keepRoom(box)();
    expect(box.style.minHeight).toBe("");
  });

  it("says no head is ablated only where an effect's room is kept", () => {
    const shown = document.createElement("div");
    renderEffect(shown, effect);
    expect(shown.querySelector(".aw-effect-title")!.textContent).toBe("ablated (zero): L2 H9");
    expect(shown.querySelectorAll("tr").length).toBe(2 + 6); // score, cosine, one row per layer
    const fresh = document.createElement("div");
    renderEffect(fresh, {});
    expect(fresh.childNodes.length).toBe(0); // never ablated: nothing at all
    const kept = document.createElement("div");
    renderEffect(kept, {}, true);
    expect(kept.textContent).toBe("no head ablated");
    expect(kept.querySelector("table")).toBeNull(); // no number stays from the restored run
  });
});
