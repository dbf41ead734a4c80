/** A stand-in for an anywidget model with ipywidgets' echo behaviour, for the link's and state's tests. */
import type { Model, ViewState } from "../src/state";

type Attrs = Record<string, unknown>;

export class FakeModel implements Model {
  attrs: Attrs;
  /** Each save_changes: the values it sent. */
  saved: Attrs[] = [];
  /** Each custom message sent. */
  messages: unknown[] = [];
  private dirty = new Set<string>();
  private lastSent: Attrs = {};
  private listeners = new Map<string, Set<(...args: any[]) => void>>();

  constructor(attrs: Attrs) {
    this.attrs = { metrics: {}, viewport: [], ...attrs };
  }

  get<K extends keyof ViewState>(key: K): ViewState[K] {
    return this.attrs[key] as ViewState[K];
  }

  set<K extends keyof ViewState>(key: K, value: ViewState[K]): void {
    this.dirty.add(key);
    this.apply(key, value);
  }

  save_changes(): void {
    const out: Attrs = {};
    for (const k of this.dirty) out[k] = this.attrs[k];
    this.dirty.clear();
    this.saved.push(out);
    Object.assign(this.lastSent, out);
  }

  /** What ipywidgets does with the kernel's echo_update: the last value *sent* replaces the local one,
   *  even when a newer local value has not been sent yet. */
  echo(key: string): void {
    this.apply(key, this.lastSent[key]);
  }

  /** A change from the kernel (not an echo): sets the value and fires the event. */
  fromKernel(key: string, value: unknown): void {
    this.apply(key, value);
  }

  on(event: string, cb: (...args: any[]) => void): void {
    if (!this.listeners.has(event)) this.listeners.set(event, new Set());
    this.listeners.get(event)!.add(cb);
  }

  off(event: string, cb: (...args: any[]) => void): void {
    this.listeners.get(event)?.delete(cb);
  }

  send(content: unknown): void {
    this.messages.push(content);
  }

  fire(event: string, ...args: unknown[]): void {
    for (const cb of [...(this.listeners.get(event) ?? [])]) cb(...args);
  }

  listenerCount(): number {
    let n = 0;
    for (const s of this.listeners.values()) n += s.size;
    return n;
  }

  private apply(key: string, value: unknown): void {
    const changed = JSON.stringify(this.attrs[key]) !== JSON.stringify(value);
    this.attrs[key] = value;
    if (changed) this.fire(`change:${key}`);
  }
}
