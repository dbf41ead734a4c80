import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { restingPointer } from "../src/dom";

/** The listeners by event type, for a target that is only an object (vitest runs without a DOM). */
function wire(target: { isConnected: boolean }, fire: () => void, ms: number, when?: (ev: PointerEvent) => boolean) {
  const on: Record<string, (ev: unknown) => void> = {};
  for (const [t, type, fn] of restingPointer(target as unknown as HTMLElement, fire, ms, when)) {
    expect(t).toBe(target);
    on[type] = fn as (ev: unknown) => void;
  }
  return on;
}

describe("a hint once the pointer rests on a control", () => {
  beforeEach(() => { vi.useFakeTimers(); });
  afterEach(() => { vi.useRealTimers(); });

  it("fires after the rest, once, and not for a pointer that crosses or clicks first", () => {
    const target = { isConnected: true };
    const fire = vi.fn();
    const on = wire(target, fire, 60);
    on.pointerenter({});
    vi.advanceTimersByTime(59);
    expect(fire).not.toHaveBeenCalled();
    vi.advanceTimersByTime(1);
    expect(fire).toHaveBeenCalledTimes(1);
    vi.advanceTimersByTime(1000);
    expect(fire).toHaveBeenCalledTimes(1);
    on.pointerenter({}); // crossing: left after 40 ms
    vi.advanceTimersByTime(40);
    on.pointerleave({});
    vi.advanceTimersByTime(1000);
    expect(fire).toHaveBeenCalledTimes(1);
    on.pointerenter({}); // a quick click: the click asks for the run itself
    vi.advanceTimersByTime(10);
    on.click({});
    vi.advanceTimersByTime(1000);
    expect(fire).toHaveBeenCalledTimes(1);
  });

  it("waits for the condition at entry, and sends nothing from a control gone from the page", () => {
    const target = { isConnected: true };
    const fire = vi.fn();
    const on = wire(target, fire, 100, (ev) => ev.shiftKey);
    on.pointerenter({ shiftKey: false });
    vi.advanceTimersByTime(500);
    expect(fire).not.toHaveBeenCalled();
    on.pointerenter({ shiftKey: true });
    target.isConnected = false; // the view was closed meanwhile
    vi.advanceTimersByTime(500);
    expect(fire).not.toHaveBeenCalled();
  });
});
