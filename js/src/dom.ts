/** Updating the DOM in place. A slider move changes a few numbers of the metrics panel; building
 *  the panel anew each time made the browser recompute the style of every element in it and lay
 *  out the page again (in JupyterLab about 4 ms of each move, forced by the toolbar's next
 *  measurement), and closed a "pattern scores" block the reader had opened. */

/** Attributes the reader changes, which a fresh copy of the same element must not reset. */
const KEPT = new Set(["open"]);

/** Set `el`'s text only when it differs: writing the same text still replaces its text node. */
export function setText(el: Node, text: string): void {
  if (el.textContent !== text) el.textContent = text;
}

function sameKind(a: Node, b: Node): boolean {
  if (a.nodeType !== b.nodeType) return false;
  if (a.nodeType !== Node.ELEMENT_NODE) return true;
  return (a as Element).tagName === (b as Element).tagName;
}

function sameAttributes(a: NamedNodeMap, b: NamedNodeMap): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) {
    if (a[i].name !== b[i].name || a[i].value !== b[i].value) return false;
  }
  return true;
}

function syncAttributes(old: Element, fresh: Element): void {
  // the same code built both, so the same attributes come in the same order: on a reply most
  // elements have nothing to change, and copying both lists for each was a third of a morph
  if (sameAttributes(old.attributes, fresh.attributes)) return;
  // a canvas's size attributes come from the code that draws on it, after the morph
  const drawn = old.tagName === "CANVAS";
  for (const { name } of Array.from(old.attributes)) {
    if (!KEPT.has(name) && !drawn && !fresh.hasAttribute(name)) old.removeAttribute(name);
  }
  for (const { name, value } of Array.from(fresh.attributes)) {
    if (!KEPT.has(name) && old.getAttribute(name) !== value) old.setAttribute(name, value);
  }
}

/** Make `box`'s children equal to `fresh`'s (a detached element built from scratch): nodes of
 *  the same tag are kept and updated (text, attributes), the rest replaced. A kept canvas keeps
 *  its pixels, a kept `<details>` its open state. Event listeners are not compared: use it for
 *  content without listeners of its own. */
export function morph(box: Element, fresh: Element): void {
  const olds = Array.from(box.childNodes);
  const news = Array.from(fresh.childNodes);
  news.forEach((n, i) => {
    const o = olds[i];
    if (!o) {
      box.append(n);
    } else if (!sameKind(o, n)) {
      box.replaceChild(n, o);
    } else if (o.nodeType === Node.ELEMENT_NODE) {
      syncAttributes(o as Element, n as Element);
      morph(o as Element, n as Element);
    } else if (o.nodeValue !== n.nodeValue) {
      o.nodeValue = n.nodeValue;
    }
  });
  for (let i = olds.length - 1; i >= news.length; i--) olds[i].remove();
}

/** Keep the room `box` has taken: its min-height follows the largest height it has had, so that
 *  content that comes and goes in it does not move what lies below. The ablation's effect is
 *  such content: in a narrow notebook it sits under the map, and each toggle made the view (and
 *  the rest of the notebook) 150 px taller or shorter, which moved the page under the reader and
 *  had JupyterLab lay out and scroll-anchor the notebook again. Nothing is reserved before any
 *  content came. Returns the cleanup; without ResizeObserver (old browsers) it keeps nothing. */
export function keepRoom(box: HTMLElement): () => void {
  if (typeof ResizeObserver === "undefined") return () => {};
  let room = 0;
  const observer = new ResizeObserver((entries) => {
    const height = Math.ceil(entries[entries.length - 1].contentRect.height);
    if (height > room) {
      room = height;
      box.style.minHeight = `${height}px`;
    }
  });
  observer.observe(box);
  return () => observer.disconnect();
}

/** A listener as the view registers it (and removes it on dispose). */
export type Listener = [EventTarget, string, EventListener, AddEventListenerOptions?];

/** Listeners that call `fire` once the pointer has rested `ms` on `target` (entered, with
 *  `when(event)` true, and neither left nor clicked since). A pointer crossing a control on its
 *  way elsewhere sends nothing; a control no longer in the page fires nothing. */
export function restingPointer(target: HTMLElement, fire: () => void, ms: number,
  when: (ev: PointerEvent) => boolean = () => true): Listener[] {
  let rest: ReturnType<typeof setTimeout> | undefined;
  const stop = () => { clearTimeout(rest); rest = undefined; };
  const enter = (ev: Event) => {
    stop();
    if (when(ev as PointerEvent)) rest = setTimeout(() => { rest = undefined; if (target.isConnected) fire(); }, ms);
  };
  return [[target, "pointerenter", enter], [target, "pointerleave", stop], [target, "click", stop]];
}
