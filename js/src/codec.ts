/** Decoding of the binary panel trait sent by attnwidget/_codec.py. */

/** One [queries, keys] map; mirrors the Python dict {"buffer", "dtype", "shape"}. */
export interface PanelMessage {
  buffer: DataView | ArrayBuffer | Uint8Array;
  dtype: "uint8" | "float32";
  shape: [number, number];
}

export interface Panel {
  rows: number;
  cols: number;
  /** Weights quantised to 0..255 (row-major), what the colormap indexes. */
  levels: Uint8Array;
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
  if (msg.dtype === "uint8") {
    if (bytes.length !== n) throw new Error(`panel: expected ${n} bytes for ${rows}x${cols}, got ${bytes.length}`);
    return { rows, cols, levels: bytes.slice() };
  }
  if (msg.dtype === "float32") {
    if (bytes.length !== 4 * n) throw new Error(`panel: expected ${4 * n} bytes for ${rows}x${cols} float32, got ${bytes.length}`);
    // copy first so the Float32Array is 4-byte aligned whatever the offset was
    const values = new Float32Array(bytes.slice().buffer);
    const levels = new Uint8Array(n);
    for (let i = 0; i < n; i++) levels[i] = Math.round(Math.min(1, Math.max(0, values[i])) * 255);
    return { rows, cols, levels };
  }
  throw new Error(`panel: unknown dtype ${String((msg as { dtype: unknown }).dtype)}`);
}
