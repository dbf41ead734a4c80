import { describe, expect, it } from "vitest";
import protocol from "../../attnwidget/protocol.json";
import { COLORMAPS } from "../src/colormaps";
import { COLORMAP_NAMES, current, HEAD_MODES, MODES, panelKey, replyKey, SCALES, stateKey } from "../src/state";
import { FakeModel } from "./fake_model";

describe("state", () => {
  it("takes the choice lists from protocol.json, the file Python reads", () => {
    expect(MODES).toEqual(["head", "grid", "average", "rollout"]);
    expect(MODES).toEqual(protocol.modes);
    expect(COLORMAP_NAMES).toEqual(protocol.colormaps);
    expect(SCALES).toEqual(protocol.scales);
    expect(HEAD_MODES).toEqual(protocol.head_modes);
    for (const name of COLORMAP_NAMES) expect(COLORMAPS[name]).toBeDefined(); // every offered colormap is drawable
  });

  it("writes the reply key in protocol.json's order, with no head in the layer modes", () => {
    expect(protocol.reply_key).toEqual(["mode", "layer", "head", "threshold", "query", "top_k", "ablated"]);
    const s = { mode: "head", layer: 1, head: 2, threshold: 0.1, query: null, top_k: 5, ablated: [[0, 1]] };
    expect(stateKey(s)).toBe('["head",1,2,0.1,null,5,[[0,1]]]');
    expect(stateKey({ ...s, mode: "average" })).toBe('["average",1,null,0.1,null,5,[[0,1]]]');
    expect(stateKey({ ...s, ablated: undefined })).toBe('["head",1,2,0.1,null,5,[]]');
    // the view Python sends (attnwidget._messages.reply_view) gives the same key
    const view = { mode: "average", layer: 1, head: null, ablated: [[0, 1]], threshold: 0.1, query: null, top_k: 5 };
    expect(replyKey(view)).toBe(stateKey({ ...s, mode: "average" }));
    expect(replyKey(undefined)).toBe("");
  });

  it("keys a picture by the map it shows: grid shows the head's map", () => {
    const grid = panelKey({ mode: "grid", layer: 0, head: 3, ablated: [] });
    expect(grid).toBe(panelKey({ mode: "head", layer: 0, head: 3, ablated: [] }));
    expect(grid).toBe('["head",0,3,[],null]');
    expect(panelKey({ mode: "rollout", layer: 2, head: 3, scale: "auto" })).toBe('["rollout",2,null,[],"auto"]');
    // a picture drawn on another colour scale is not the one asked for
    expect(panelKey({ mode: "head", layer: 0, head: 3, scale: "sqrt" })).not.toBe(panelKey({ mode: "head", layer: 0, head: 3, scale: "auto" }));
    expect(panelKey({ mode: "head", layer: 0, head: 4, ablated: [] })).not.toBe(grid);
  });

  it("reads the current state from the model", () => {
    const model = new FakeModel({ mode: "grid", layer: 1, head: 2, threshold: 0.2, query: 3, top_k: 4, ablated: [] });
    expect(current(model)).toEqual({ mode: "grid", layer: 1, head: 2, threshold: 0.2, query: 3, top_k: 4, ablated: [] });
    expect(stateKey(current(model))).toBe('["grid",1,2,0.2,3,4,[]]');
  });
});
