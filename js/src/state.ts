/** The view's state as Python syncs it: the trait names, the choice lists and the reply key.
 *  The lists and the key's layout come from attnwidget/protocol.json, the file Python reads too. */
import type { AtlasMessage, PanelMessage } from "./codec";
import type { Effect, Metrics } from "./controls";
import protocol from "../../attnwidget/protocol.json";

/** A dict trait Python has not filled (yet): an empty object. */
export type Empty = Record<string, never>;

/** Mirrors the synced traits of attnwidget.widget.AttentionView, same names, a line per role. */
export interface ViewState {
  // set by the controls; Python checks each and answers with the traits below
  layer: number; head: number; threshold: number; dim: boolean; query: number | null; top_k: number;
  mode: string; colormap: string; scale: string; viewport: number[];
  ablated: number[][]; ablation_mode: string; compare: boolean;
  // read-only in Python: whether the view has a model to re-run (ablation)
  can_ablate: boolean;
  // read-only in Python: the record's size and tokens, the captions and the status line
  n_layers: number; n_heads: number; query_tokens: string[]; key_tokens: string[];
  caption: string; caption_b: string; status: string;
  // the pictures: overview, zoomed window, head thumbnails; B and A - B when comparing
  panel: PanelMessage; detail: PanelMessage | Empty; atlas: AtlasMessage | Empty;
  panel_b: PanelMessage | Empty; panel_diff: PanelMessage | Empty;
  // the numbers: the shown map's metrics, an ablation's effect, a sweep's score per head
  metrics: Metrics; effect: Effect;
  sweep_scores: { score?: (number | null)[][]; metric?: string; mode?: string };
  // a generation (generate=N): the selected step, the text view, its shading row
  step: number | null; show_text: boolean;
  generation: { prompt_length?: number; n_new?: number; greedy?: boolean; seed?: number; cached?: boolean };
  text_row: (PanelMessage & { kind?: string; view?: Record<string, unknown> }) | Empty;
}

/** Every synced trait, same names as in Python (tests/test_package.py checks both lists agree). */
export const STATE_KEYS: (keyof ViewState)[] = [
  "layer", "head", "threshold", "dim", "query", "mode", "colormap", "scale", "top_k", "viewport",
  "n_layers", "n_heads", "panel", "detail", "atlas", "metrics", "query_tokens", "key_tokens",
  "caption", "status", "ablated", "ablation_mode", "compare", "effect", "panel_b", "panel_diff",
  "caption_b", "sweep_scores", "step", "show_text", "generation", "text_row", "can_ablate",
];

/** The threshold the map and the text view dim below: 0 (nothing dimmed) until the user turns
 *  dimming on, so that a first look at a long text shows its whole pattern. */
export function dimBelow(model: Pick<Model, "get">): number {
  return model.get("dim") ? model.get("threshold") : 0;
}

/** View modes, colormaps and colour scales offered by the controls (protocol.json). */
export const MODES: string[] = protocol.modes;
export const COLORMAP_NAMES: string[] = protocol.colormaps;
export const SCALES: string[] = protocol.scales;
/** Modes whose map is one head's (the others show a whole layer). */
export const HEAD_MODES: string[] = protocol.head_modes;

/** What the view needs of an anywidget model (a fake one in the tests). */
export interface Model {
  get<K extends keyof ViewState>(key: K): ViewState[K];
  set<K extends keyof ViewState>(key: K, value: ViewState[K]): void;
  save_changes(): void;
  on(event: string, cb: (...args: any[]) => void): void;
  off(event: string, cb: (...args: any[]) => void): void;
  send(content: unknown): void;
}

/** The fields of the reply key, in protocol.json's order. */
export interface ReplyState {
  mode: string; layer: number; head: number | null; threshold: number; query: number | null; top_k: number;
  ablated?: number[][];
}

function keyOf(fields: string[], s: Record<string, unknown>): string {
  const inHeadMode = HEAD_MODES.includes(String(s.mode));
  return JSON.stringify(fields.map((f) => (f === "head" && !inHeadMode ? null : f === "ablated" ? s.ablated ?? [] : s[f])));
}

/** The state a metrics reply must carry to be current (AttentionView's metrics `view`). */
export function stateKey(s: ReplyState): string {
  return keyOf(protocol.reply_key, s as unknown as Record<string, unknown>);
}

/** The key of a reply's `view` (as Python sends it), comparable with stateKey. */
export function replyKey(view: Record<string, unknown> | undefined): string {
  return view ? keyOf(protocol.reply_key, view) : "";
}

/** The key of the picture a state asks for: the map (grid shows the head's map: keyed as "head")
 *  and the colour scale it is drawn on. */
export function panelKey(s: { mode: string; layer: number; head: number | null; ablated?: unknown; scale?: string }): string {
  const mode = HEAD_MODES.includes(s.mode) ? "head" : s.mode;
  return keyOf(protocol.panel_key, { ...s, mode, head: HEAD_MODES.includes(s.mode) ? s.head : null });
}

/** The reply-key fields of the model's current state. */
export function current(model: Model): ReplyState & { ablated: number[][]; scale: string } {
  return {
    mode: model.get("mode"), layer: model.get("layer"), head: model.get("head"),
    threshold: model.get("threshold"), query: model.get("query"), top_k: model.get("top_k"),
    ablated: model.get("ablated"), scale: model.get("scale"), // the picture's key has the scale too
  };
}
