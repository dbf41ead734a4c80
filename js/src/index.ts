/** anywidget entry: wires the parts of the view together. Draws what Python sent; computes no metric.
 *
 *  state.ts       the synced traits, the choice lists and the reply key (attnwidget/protocol.json)
 *  link.ts        the one way to send, the one request in flight, ping, debounce, unsent user values
 *  view.ts        the DOM, the decoded messages, sync and paint
 *  interaction.ts the controls and the canvas's mouse and keys
 *  theme.ts       the page's colours, kept between paints, read again on a theme change or attach
 */
import { keepRoom, type Listener } from "./dom";
import { generationHandlers, generationListeners } from "./generation";
import { canvasListeners, controlListeners, headPicker, hintAblation, refreshTooltip, type Refresh } from "./interaction";
import { createLink } from "./link";
import type { Model } from "./state";
import { themeOf, watchTheme, whenAttached } from "./theme";
import { buildView, forgetDrawn, paint, showMetrics, showThumbs, Shown, sync } from "./view";

export { NO_REPLY_MS } from "./link";
export { COLORMAP_NAMES, MODES, replyKey, SCALES, STATE_KEYS, stateKey, type ViewState } from "./state";

/** Traits whose change only needs the controls re-synced and the map repainted. */
const SYNCED = ["layer", "head", "threshold", "dim", "query", "mode", "scale", "caption", "status", "n_layers", "n_heads", "top_k", "can_ablate"];

/** Paint once after the current task: the change events of one message (panel, caption,
 *  metrics, ...) come in one task and share one paint, which happens before the browser's next
 *  frame instead of waiting for it (input events are already aligned to frames). */
function paintScheduler(paintNow: () => void): { draw: () => void; stop: () => void } {
  let queued = false;
  let stopped = false;
  return {
    draw: () => {
      if (queued) return;
      queued = true;
      queueMicrotask(() => {
        queued = false;
        if (!stopped) paintNow();
      });
    },
    stop: () => { stopped = true; },
  };
}

/** Run a message's handler and say when it arrived and how long it took (for benchmarks). */
function reported(el: HTMLElement, name: string, fn: () => void): void {
  const time = performance.now();
  fn();
  el.dispatchEvent(new CustomEvent("aw-received", { bubbles: true, detail: { name, time, ms: performance.now() - time } }));
}

function render({ model, el }: { model: Model; el: HTMLElement }): () => void {
  const parts = buildView(el);
  const shown = new Shown();
  const link = createLink(model, (gone) => {
    parts.offline.style.display = gone ? "" : "none";
    el.classList.toggle("aw-no-reply", gone);
  });
  link.display(true);
  const { theme, forget: forgetTheme } = themeOf(el);

  const painter = paintScheduler(() => {
    paint(el, parts, shown, model, theme());
    refreshTooltip(parts, model, shown);
  });
  const ui: Refresh = {
    draw: painter.draw,
    sync: () => sync(parts, model),
    showThumbs: () => showThumbs(parts, shown, model, theme(), pick, (h) => hintAblation(model, h)),
  };
  const pick = headPicker(model, link, ui);
  const onMetrics = () => {
    showMetrics(parts, model, theme());
    link.replied(model.get("metrics").view);
    ui.draw();
  };
  const syncAndDraw = () => { ui.sync(); ui.draw(); };
  const withThumbs = () => { ui.sync(); ui.showThumbs(); ui.draw(); };

  // a canvas whose 2D context the browser lost (a GPU reset) comes back blank: draw them all
  // again, as nothing they are drawn from changed (view.changed)
  const restored = () => { forgetDrawn(parts); ui.showThumbs(); onMetrics(); };
  const listeners: Listener[] = [
    [el, "contextrestored", restored, { capture: true }],
    ...controlListeners(parts, model, link, ui, pick),
    ...canvasListeners(parts, model, shown, link, ui, pick),
    ...generationListeners(parts.step, parts.text, model, link, ui),
  ];
  for (const [target, type, fn, options] of listeners) target.addEventListener(type, fn, options);

  const handlers: [string, () => void][] = [
    ["panel", () => { shown.takePanel(model); link.repliedPicture(model.get("panel").view); ui.draw(); }],
    ["detail", () => { shown.takeDetail(model, el); ui.draw(); }],
    ["atlas", () => { shown.takeAtlas(model); ui.showThumbs(); ui.draw(); }],
    ["metrics", onMetrics], ["effect", onMetrics],
    ["query_tokens", ui.draw], ["key_tokens", ui.draw],
    ["panel_b", ui.draw], ["panel_diff", ui.draw], ["caption_b", ui.draw],
    ["ablated", withThumbs], ["colormap", withThumbs], ["compare", syncAndDraw],
    ["sweep_scores", ui.showThumbs],
    ...generationHandlers(model, ui),
    ...SYNCED.map((name): [string, () => void] => [name, syncAndDraw]),
  ];
  // a change event that only undid an unsent user value is answered by putting it back
  // (which fires the event again, with the user's value)
  const subscribed = handlers.map(([name, fn]): [string, () => void] => [
    `change:${name}`, () => { if (!link.keepUnsent(name)) reported(el, name, fn); },
  ]);
  for (const [event, fn] of subscribed) model.on(event, fn);
  model.on("msg:custom", link.onCustom);

  const recolour = () => { forgetTheme(); ui.showThumbs(); onMetrics(); };
  // the effect's room is kept (dom.ts keepRoom): toggling a head moves nothing below the view
  const unwatch = [watchTheme(recolour), whenAttached(el, recolour), keepRoom(parts.effectBox)];

  shown.takePanel(model);
  shown.takeDetail(model, el);
  shown.takeAtlas(model);
  ui.sync();
  ui.showThumbs();
  onMetrics();
  return () => {
    painter.stop();
    link.display(false);
    link.dispose();
    for (const stop of unwatch) stop();
    for (const [event, fn] of subscribed) model.off(event, fn);
    model.off("msg:custom", link.onCustom);
    for (const [target, type, fn, options] of listeners) target.removeEventListener(type, fn, options);
  };
}

export default { render };
