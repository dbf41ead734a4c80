/** anywidget entry: wires the parts of the view together. Draws what Python sent; computes no metric.
 *
 *  state.ts       the synced traits, the choice lists and the reply key (attnwidget/protocol.json)
 *  link.ts        the one way to send, the one request in flight, ping, debounce, unsent user values
 *  view.ts        the DOM, the decoded messages, sync and paint
 *  interaction.ts the controls and the canvas's mouse and keys
 */
import { generationHandlers, generationListeners } from "./generation";
import { canvasListeners, controlListeners, headPicker, type Refresh } from "./interaction";
import { createLink } from "./link";
import type { Model } from "./state";
import { buildView, paint, readTheme, showMetrics, showThumbs, Shown, sync } from "./view";

export { NO_REPLY_MS } from "./link";
export { COLORMAP_NAMES, MODES, replyKey, SCALES, STATE_KEYS, stateKey, type ViewState } from "./state";

/** Traits whose change only needs the controls re-synced and the map repainted. */
const SYNCED = ["layer", "head", "threshold", "query", "mode", "scale", "caption", "status", "n_layers", "n_heads", "top_k"];

function render({ model, el }: { model: Model; el: HTMLElement }): () => void {
  const parts = buildView(el);
  const shown = new Shown();
  const link = createLink(model, (gone) => {
    parts.offline.style.display = gone ? "" : "none";
    el.classList.toggle("aw-no-reply", gone);
  });
  // one scratch context per view, to read CSS colours
  const probe = document.createElement("canvas").getContext("2d");
  const theme = () => readTheme(el, probe);

  let frame = 0;
  const ui: Refresh = {
    draw: () => {
      cancelAnimationFrame(frame);
      frame = requestAnimationFrame(() => paint(el, parts, shown, model, theme()));
    },
    sync: () => sync(parts, model),
    showThumbs: () => showThumbs(parts, shown, model, theme(), pick),
  };
  const pick = headPicker(model, link, ui);
  const onMetrics = () => {
    showMetrics(parts, model, theme());
    link.replied(model.get("metrics").view);
    ui.draw();
  };
  const syncAndDraw = () => { ui.sync(); ui.draw(); };
  const withThumbs = () => { ui.sync(); ui.showThumbs(); ui.draw(); };

  const listeners = [
    ...controlListeners(parts, model, link, ui, pick),
    ...canvasListeners(parts, model, shown, link, ui, pick),
    ...generationListeners(parts.step, parts.text, model, link, ui),
  ];
  for (const [target, type, fn, options] of listeners) target.addEventListener(type, fn, options);

  const handlers: [string, () => void][] = [
    ["panel", () => { shown.takePanel(model); ui.draw(); }],
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
    `change:${name}`, () => { if (!link.keepUnsent(name)) fn(); },
  ]);
  for (const [event, fn] of subscribed) model.on(event, fn);
  model.on("msg:custom", link.onCustom);

  // light/dark: JupyterLab flips attributes on <body> when the theme changes
  const themeWatch = new MutationObserver(() => { ui.showThumbs(); onMetrics(); });
  themeWatch.observe(document.body, { attributes: true, attributeFilter: ["data-jp-theme-light", "data-jp-theme-name"] });

  shown.takePanel(model);
  shown.takeDetail(model, el);
  shown.takeAtlas(model);
  ui.sync();
  ui.showThumbs();
  onMetrics();
  return () => {
    cancelAnimationFrame(frame);
    link.dispose();
    themeWatch.disconnect();
    for (const [event, fn] of subscribed) model.off(event, fn);
    model.off("msg:custom", link.onCustom);
    for (const [target, type, fn, options] of listeners) target.removeEventListener(type, fn, options);
  };
}

export default { render };
