/** The view's colours: read from the page (widget.css's --aw-* variables over JupyterLab's
 *  theme or the page's prefers-color-scheme), kept between paints, and read again when the
 *  theme changes or the host attaches the view. */
import type { Theme } from "./heatmap";

/** A CSS colour as RGB, normalised by a canvas context (`probe`); `fallback` when it cannot. */
export function cssRgb(probe: CanvasRenderingContext2D | null, css: string, fallback: [number, number, number]): [number, number, number] {
  if (!probe || !css) return fallback;
  probe.fillStyle = "#000";
  probe.fillStyle = css; // the canvas normalises any CSS colour to #rrggbb (or rgba())
  const m = /^#([0-9a-f]{2})([0-9a-f]{2})([0-9a-f]{2})$/i.exec(String(probe.fillStyle));
  return m ? [parseInt(m[1], 16), parseInt(m[2], 16), parseInt(m[3], 16)] : fallback;
}

/** The theme colours, from widget.css's --aw-* variables: JupyterLab's theme, or the page's
 *  prefers-color-scheme where there is no JupyterLab (light or dark). */
export function readTheme(el: HTMLElement, probe: CanvasRenderingContext2D | null): Theme {
  const css = getComputedStyle(el);
  const v = (name: string, fb: string) => css.getPropertyValue(name).trim() || fb;
  return {
    text: v("--aw-fg", "#222"),
    background: cssRgb(probe, v("--aw-bg0", "#ffffff"), [255, 255, 255]),
    masked: v("--aw-border", "#9e9e9e"),
    accent: v("--aw-accent", "#e8590c"),
  };
}

/** Call `onChange` when the page's theme changes: JupyterLab's attributes on <body>, or the
 *  page's prefers-color-scheme (VS Code, Colab, a plain page); returns the unsubscribe. */
export function watchTheme(onChange: () => void): () => void {
  const observer = new MutationObserver(onChange);
  observer.observe(document.body, { attributes: true, attributeFilter: ["data-jp-theme-light", "data-jp-theme-name"] });
  const scheme = window.matchMedia?.("(prefers-color-scheme: dark)");
  scheme?.addEventListener("change", onChange);
  return () => { observer.disconnect(); scheme?.removeEventListener("change", onChange); };
}

/** Call `fn` whenever `el` comes into the page: the first attach (JupyterLab and Notebook 7
 *  render an output's view before they attach it) and again after a host took it out
 *  (JupyterLab's windowed notebook detaches the cells scrolled away). A view outside the page
 *  has no computed style: what it painted there has the fallback colours (#222 text on white,
 *  also in a dark theme) and is not stamped rendered. A ResizeObserver hears both moves (the
 *  size goes to 0 and back); without one, each frame is checked until the first attach.
 *  Returns the cancel. */
export function whenAttached(el: HTMLElement, fn: () => void): () => void {
  let inPage = el.isConnected;
  if (typeof ResizeObserver === "undefined") {
    let frame = 0;
    const check = () => { if (el.isConnected) fn(); else frame = requestAnimationFrame(check); };
    if (!inPage) frame = requestAnimationFrame(check);
    return () => cancelAnimationFrame(frame);
  }
  const observer = new ResizeObserver(() => {
    const now = el.isConnected;
    if (now && !inPage) fn();
    inPage = now;
  });
  observer.observe(el);
  return () => observer.disconnect();
}

/** The view's colours, read once and again only after `forget` (the page's theme changed):
 *  reading computed style after the DOM changed forces a style recalculation of the page, about
 *  3 ms of every slider move in JupyterLab. A view not yet in the page has no computed style:
 *  nothing is kept until it is. */
export function themeOf(el: HTMLElement): { theme: () => Theme; forget: () => void } {
  const probe = document.createElement("canvas").getContext("2d"); // to read CSS colours
  let kept: Theme | null = null;
  return {
    theme: () => {
      if (kept) return kept;
      const read = readTheme(el, probe);
      if (el.isConnected) kept = read;
      return read;
    },
    forget: () => { kept = null; },
  };
}
