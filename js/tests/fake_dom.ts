/** The few DOM calls the text view makes, as plain objects (vitest runs in node, without a DOM).
 *  Style writes are counted, so a test can see which spans a repaint touched. No innerHTML: a
 *  token put in as HTML would not show in textContent here. */

export class FakeStyle {
  writes = 0;
  private values: Record<string, string> = {};
  get backgroundColor(): string { return this.values.backgroundColor ?? ""; }
  set backgroundColor(v: string) { this.writes++; this.values.backgroundColor = v; }
  get color(): string { return this.values.color ?? ""; }
  set color(v: string) { this.writes++; this.values.color = v; }
  display = "";
}

export class FakeElement {
  children: FakeElement[] = [];
  className = "";
  dataset: Record<string, string> = {};
  style = new FakeStyle();
  attributes: Record<string, string> = {};
  title = "";
  private text = "";

  constructor(public tagName: string) {}

  get textContent(): string {
    return this.children.length ? this.children.map((c) => c.textContent).join("") : this.text;
  }

  set textContent(v: string) {
    this.children = [];
    this.text = v;
  }

  get classList() {
    const names = () => this.className.split(" ").filter(Boolean);
    const set = (xs: string[]) => { this.className = xs.join(" "); };
    return {
      contains: (n: string) => names().includes(n),
      add: (...ns: string[]) => set([...names(), ...ns.filter((n) => !names().includes(n))]),
      remove: (...ns: string[]) => set(names().filter((n) => !ns.includes(n))),
      toggle: (n: string, force?: boolean) => {
        const on = force ?? !names().includes(n);
        if (on) set([...names().filter((x) => x !== n), n]);
        else set(names().filter((x) => x !== n));
        return on;
      },
    };
  }

  setAttribute(name: string, value: string): void { this.attributes[name] = value; }
  append(...nodes: FakeElement[]): void {
    for (const n of nodes) {
      if (n.tagName === "#fragment") this.children.push(...n.children);
      else this.children.push(n);
    }
  }
  replaceChildren(...nodes: FakeElement[]): void {
    this.children = [];
    this.append(...nodes);
  }
}

/** Install a `document` that makes FakeElements; returns a function that removes it. */
export function installFakeDocument(): () => void {
  const g = globalThis as Record<string, unknown>;
  const before = g.document;
  g.document = {
    createElement: (tag: string) => new FakeElement(tag),
    createDocumentFragment: () => new FakeElement("#fragment"),
  };
  return () => { g.document = before; };
}
