/** anywidget entry: wires the model's traits to the canvas and the sliders. */
import { decodePanel, type PanelMessage } from "./codec";
import { COLORMAPS } from "./colormaps";
import { drawHeatmap } from "./heatmap";

/** Mirrors the synced traits of attnwidget.widget.AttentionView, same names. */
export interface ViewState {
  layer: number;
  head: number;
  n_layers: number;
  n_heads: number;
  panel: PanelMessage;
  query_tokens: string[];
  key_tokens: string[];
  caption: string;
}

export const STATE_KEYS: (keyof ViewState)[] = [
  "layer", "head", "n_layers", "n_heads", "panel", "query_tokens", "key_tokens", "caption",
];

interface Model {
  get<K extends keyof ViewState>(key: K): ViewState[K];
  set<K extends keyof ViewState>(key: K, value: ViewState[K]): void;
  save_changes(): void;
  on(event: string, cb: () => void): void;
  off(event: string, cb: () => void): void;
}

function slider(name: "layer" | "head"): { box: HTMLLabelElement; input: HTMLInputElement; value: HTMLSpanElement } {
  const box = document.createElement("label");
  box.className = `aw-control aw-${name}`;
  const title = document.createElement("span");
  title.textContent = name;
  const input = document.createElement("input");
  input.type = "range";
  input.step = "1";
  input.min = "0";
  input.className = `aw-slider-${name}`;
  // JupyterLab's command-mode shortcuts would swallow arrow keys on a focused slider
  input.setAttribute("data-lm-suppress-shortcuts", "true");
  const value = document.createElement("span");
  value.className = "aw-value";
  box.append(title, input, value);
  return { box, input, value };
}

function render({ model, el }: { model: Model; el: HTMLElement }): () => void {
  el.classList.add("attnwidget");
  const canvas = document.createElement("canvas");
  canvas.className = "aw-heatmap";
  const caption = document.createElement("div");
  caption.className = "aw-caption";
  const controls = document.createElement("div");
  controls.className = "aw-controls";
  const layer = slider("layer");
  const head = slider("head");
  controls.append(layer.box, head.box);
  el.append(controls, canvas, caption);

  let frame = 0;
  const draw = () => {
    cancelAnimationFrame(frame);
    frame = requestAnimationFrame(() => {
      const color = getComputedStyle(el).getPropertyValue("--jp-ui-font-color1").trim() || "#333";
      drawHeatmap(canvas, decodePanel(model.get("panel")), COLORMAPS.viridis,
        model.get("query_tokens"), model.get("key_tokens"), color);
    });
  };
  const sync = () => {
    for (const [name, s] of [["layer", layer], ["head", head]] as const) {
      const count = model.get(name === "layer" ? "n_layers" : "n_heads");
      s.input.max = String(count - 1);
      s.input.value = String(model.get(name));
      s.value.textContent = `${model.get(name)} / ${count - 1}`;
    }
    caption.textContent = model.get("caption"); // text, never HTML
  };
  const onInput = (name: "layer" | "head", input: HTMLInputElement) => () => {
    model.set(name, Number(input.value));
    model.save_changes();
  };
  const onLayer = onInput("layer", layer.input);
  const onHead = onInput("head", head.input);
  layer.input.addEventListener("input", onLayer);
  head.input.addEventListener("input", onHead);
  const events = ["change:panel", "change:query_tokens", "change:key_tokens"];
  const syncEvents = ["change:layer", "change:head", "change:caption", "change:n_layers", "change:n_heads"];
  for (const e of events) model.on(e, draw);
  for (const e of syncEvents) model.on(e, sync);
  sync();
  draw();
  return () => {
    cancelAnimationFrame(frame);
    for (const e of events) model.off(e, draw);
    for (const e of syncEvents) model.off(e, sync);
    layer.input.removeEventListener("input", onLayer);
    head.input.removeEventListener("input", onHead);
  };
}

export default { render };
