import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { createLink, NO_REPLY_MS, REPLY_WAIT_MS, VIEWPORT_DEBOUNCE_MS } from "../src/link";
import { stateKey } from "../src/state";
import { FakeModel } from "./fake_model";

const STATE = { mode: "head", layer: 0, head: 0, threshold: 0.1, query: null, top_k: 5, ablated: [] };

/** The metrics `view` Python would send for the model's state now. */
function replyFor(model: FakeModel) {
  const a = model.attrs;
  return { mode: a.mode, layer: a.layer, head: a.head, ablated: a.ablated, threshold: a.threshold, query: a.query, top_k: a.top_k };
}

function setup() {
  const model = new FakeModel({ ...STATE });
  const offline: boolean[] = [];
  const link = createLink(model, (gone) => offline.push(gone));
  return { model, link, offline };
}

beforeEach(() => vi.useFakeTimers());
afterEach(() => vi.useRealTimers());

describe("link to Python", () => {
  it("keeps a user value set while a request is in flight when the echo of the value before it arrives", () => {
    const { model, link } = setup();
    // the view's wiring: a change event that only undid an unsent user value puts it back
    const seen: unknown[] = [];
    model.on("change:head", () => { if (!link.keepUnsent("head")) seen.push(model.get("head")); });
    link.setLocal("head", 1);
    link.request(); // head 1 sent; its metrics are awaited
    link.setLocal("head", 2); // moved again while Python is busy: not sent yet
    link.request(); // queued behind the one in flight
    expect(model.saved.map((s) => s.head)).toEqual([1]);
    model.echo("head"); // ipywidgets applies the echo of the last *sent* value (1) over the unsent 2
    expect(model.get("head")).toBe(2); // put back
    expect(seen[seen.length - 1]).toBe(2); // and the view shows the user's value
    link.replied({ ...replyFor(model), head: 1 }); // the reply to head 1 releases the queue
    expect(model.saved.map((s) => s.head)).toEqual([1, 2]); // ... and the user's last value is sent
    model.echo("head");
    expect(model.get("head")).toBe(2); // nothing unsent: the echo of 2 is just 2
  });

  it("does not put back a value once it was sent, nor one the kernel changed for a key never set locally", () => {
    const { model, link } = setup();
    link.setLocal("threshold", 0.3);
    link.save();
    model.fromKernel("threshold", 0.4); // e.g. set from Python
    expect(link.keepUnsent("threshold")).toBe(false);
    expect(model.get("threshold")).toBe(0.4);
    model.fromKernel("layer", 2);
    expect(link.keepUnsent("layer")).toBe(false);
  });

  it("keeps one request in flight and only the latest one queued", () => {
    const { model, link } = setup();
    link.setLocal("head", 1);
    link.request();
    for (const h of [2, 3, 4]) {
      link.setLocal("head", h);
      link.request();
    }
    expect(model.saved.length).toBe(1);
    link.replied({ ...replyFor(model), head: 7 }); // a reply to some other state releases nothing
    expect(model.saved.length).toBe(1);
    link.replied({ ...replyFor(model), head: 1 });
    expect(model.saved.map((s) => s.head)).toEqual([1, 4]);
  });

  it("lets the next move go once the picture of a move is here (a large map's metrics follow later)", () => {
    const { model, link } = setup();
    // a picture arrives: the model holds it, then the view's panel handler tells the link
    const picture = (head: number) => {
      const view = { mode: "head", layer: 0, head, ablated: [] };
      model.fromKernel("panel", { view });
      link.repliedPicture(view);
    };
    picture(0); // the picture shown now
    link.setLocal("head", 1);
    link.request();
    link.setLocal("head", 2);
    link.request(); // queued
    expect(model.saved.map((s) => s.head)).toEqual([1]);
    picture(7); // another picture: nothing
    expect(model.saved.length).toBe(1);
    picture(1); // head 1's picture
    expect(model.saved.map((s) => s.head)).toEqual([1, 2]);
    // a threshold move keeps the picture: only its metrics release the queue
    picture(2);
    link.setLocal("threshold", 0.3);
    link.request();
    link.setLocal("threshold", 0.4);
    link.request();
    picture(2);
    expect(model.saved.length).toBe(3);
    link.replied({ ...replyFor(model), threshold: 0.3 });
    expect(model.saved.map((s) => s.threshold)).toEqual([undefined, undefined, 0.3, 0.4]);
  });

  it("sends nothing to wait for when Python already shows the state", () => {
    const { model, link } = setup();
    model.fromKernel("metrics", { view: replyFor(model) });
    link.request();
    expect(model.saved.length).toBe(1); // saved (and pinged), but no reply awaited
    link.setLocal("head", 1);
    link.request();
    expect(model.saved.length).toBe(2); // not blocked
  });

  it("takes a request's reply as the kernel's answer (no ping) and says it may be gone without one", () => {
    const { model, link, offline } = setup();
    link.setLocal("head", 1);
    link.request();
    expect(model.messages).toEqual([]); // no ping: the reply will answer
    link.replied({ ...replyFor(model), head: 1 });
    expect(offline).toEqual([false]);
    link.setLocal("head", 2);
    link.request();
    vi.advanceTimersByTime(NO_REPLY_MS); // no reply at all (the queue gave up waiting at REPLY_WAIT_MS)
    expect(offline).toEqual([false, true]);
    model.fromKernel("metrics", { view: replyFor(model) }); // nothing to await: this one pings
    link.request();
    expect(model.messages).toEqual([{ type: "ping", seq: 1 }]);
  });

  it("stops waiting for a lost reply after REPLY_WAIT_MS", () => {
    const { model, link } = setup();
    link.setLocal("head", 1);
    link.request();
    link.setLocal("head", 2);
    link.request();
    vi.advanceTimersByTime(REPLY_WAIT_MS - 1);
    expect(model.saved.length).toBe(1);
    vi.advanceTimersByTime(1);
    expect(model.saved.map((s) => s.head)).toEqual([1, 2]);
  });

  it("pings after every save and says the kernel may be gone when no pong comes", () => {
    const { model, link, offline } = setup();
    link.save();
    link.save();
    expect(model.messages).toEqual([{ type: "ping", seq: 1 }, { type: "ping", seq: 2 }]);
    link.onCustom({ type: "pong", seq: 1 }); // alive, the second change still pending
    expect(offline).toEqual([false]);
    vi.advanceTimersByTime(NO_REPLY_MS);
    expect(offline).toEqual([false, true]);
    link.onCustom({ type: "pong", seq: 2 });
    expect(offline).toEqual([false, true, false]);
    vi.advanceTimersByTime(NO_REPLY_MS * 2);
    expect(offline).toEqual([false, true, false]); // all answered: no alarm
    link.onCustom({ type: "other" });
    expect(offline.length).toBe(3);
  });

  it("asks for the zoomed window once zooming rests, only when it changed", () => {
    const { model, link } = setup();
    link.requestViewport(() => [0, 10, 0, 10]);
    link.requestViewport(() => [0, 20, 0, 20]);
    vi.advanceTimersByTime(VIEWPORT_DEBOUNCE_MS);
    expect(model.saved).toEqual([{ viewport: [0, 20, 0, 20] }]);
    link.requestViewport(() => [0, 20, 0, 20]);
    link.requestViewport(() => null); // nothing shown yet: nothing asked
    vi.advanceTimersByTime(VIEWPORT_DEBOUNCE_MS);
    expect(model.saved.length).toBe(1);
  });

  it("stops every timer on dispose", () => {
    const { model, link, offline } = setup();
    link.setLocal("head", 1);
    link.request();
    link.requestViewport(() => [0, 1, 0, 1]);
    link.dispose();
    vi.advanceTimersByTime(NO_REPLY_MS * 2);
    expect(offline).toEqual([]);
    expect(model.saved.length).toBe(1);
    expect(stateKey(STATE)).toBe('["head",0,0,0.1,null,5,[]]');
  });
});
