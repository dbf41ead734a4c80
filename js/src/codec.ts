/** Decoding of the binary traits sent by attnwidget/_codec.py and attnwidget/widget.py. */

/** Level of a masked cell; visible weights use 0..LEVELS (see attnwidget/_codec.py). */
export const MASKED = 255;
export const LEVELS = 254;

/** The view state a reply belongs to; mirrors attnwidget._messages.panel_view (keys: attnwidget/protocol.json). */
export interface ViewKey {
  mode: string;
  layer: number;
  head: number | null;
  /** [[layer, head], ...] switched off when this reply was made. */
  ablated?: number[][];
}

/** One [queries, keys] map as sent in the `panel` or `detail` trait. */
export interface PanelMessage {
  buffer: DataView | ArrayBuffer | Uint8Array;
  /** The one encoding: a byte a cell (attnwidget/_codec.py). */
  dtype: "uint8";
  shape: number[];
  vmax?: number;
  view?: ViewKey;
  /** Block size of the max-pooling (1 = full resolution). */
  pool?: number;
  full_shape?: [number, number];
  /** detail only: [q0, k0] of the window in full-resolution cells. */
  origin?: [number, number];
  /** The levels are of the square root of the weight (the "sqrt" scale). */
  sqrt?: boolean;
}

export interface Panel {
  rows: number;
  cols: number;
  /** Colour levels 0..254 (weight / vmax * 254, or sqrt(weight / vmax) * 254 with `sqrt`),
   *  MASKED for masked cells, row-major. */
  levels: Uint8Array;
  /** The weight drawn with the top colour. */
  vmax: number;
  /** Levels on a square-root scale (see `levels`). */
  sqrt: boolean;
  pool: number;
  /** Full-resolution size of the whole map. */
  fullRows: number;
  fullCols: number;
  /** Full-resolution position of cell (0, 0). */
  originRow: number;
  originCol: number;
  view: ViewKey | null;
}

function bytesOf(buffer: PanelMessage["buffer"]): Uint8Array {
  // Hosts hand over views into larger buffers: honour byteOffset/byteLength,
  // never read the whole underlying ArrayBuffer.
  if (buffer instanceof ArrayBuffer) return new Uint8Array(buffer);
  return new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.byteLength);
}

export function decodePanel(msg: PanelMessage): Panel {
  const [rows, cols] = msg.shape;
  const bytes = bytesOf(msg.buffer);
  const n = rows * cols;
  const vmax = msg.vmax ?? 1;
  if (msg.dtype !== "uint8") throw new Error(`panel: unknown dtype ${String((msg as { dtype: unknown }).dtype)}`);
  if (bytes.length !== n) throw new Error(`panel: expected ${n} bytes for ${rows}x${cols}, got ${bytes.length}`);
  const levels = bytes.slice(); // a copy: the host may reuse its buffer
  const pool = msg.pool ?? 1;
  const [fullRows, fullCols] = msg.full_shape ?? [rows * pool, cols * pool];
  const [originRow, originCol] = msg.origin ?? [0, 0];
  return { rows, cols, levels, vmax, sqrt: !!msg.sqrt, pool, fullRows, fullCols, originRow, originCol, view: msg.view ?? null };
}

/** Head thumbnails of one layer, as sent in the `atlas` trait. */
export interface AtlasMessage {
  buffer: DataView | ArrayBuffer | Uint8Array;
  dtype: "uint8";
  shape: [number, number, number];
  layer: number;
  pool: number;
  badges: Badge[];
}

export interface Badge {
  head: number;
  name: string;
  entropy: number;
  normalized_entropy: number;
  sharpness: number;
  grade: string;
}

export interface Atlas {
  layer: number;
  heads: number;
  rows: number;
  cols: number;
  /** [heads * rows * cols] levels, each thumbnail on its own 0..254 range. */
  levels: Uint8Array;
  badges: Badge[];
}

export function decodeAtlas(msg: AtlasMessage): Atlas {
  const [heads, rows, cols] = msg.shape;
  const bytes = bytesOf(msg.buffer);
  if (bytes.length !== heads * rows * cols) {
    throw new Error(`atlas: expected ${heads * rows * cols} bytes for ${heads}x${rows}x${cols}, got ${bytes.length}`);
  }
  return { layer: msg.layer, heads, rows, cols, levels: bytes.slice(), badges: msg.badges };
}

/** One thumbnail of an atlas as a Panel (full resolution unknown here: pool 1). */
export function atlasPanel(atlas: Atlas, head: number): Panel {
  const n = atlas.rows * atlas.cols;
  return {
    rows: atlas.rows, cols: atlas.cols, levels: atlas.levels.subarray(head * n, (head + 1) * n),
    vmax: 1, sqrt: false, pool: 1, fullRows: atlas.rows, fullCols: atlas.cols, originRow: 0, originCol: 0,
    view: null,
  };
}
