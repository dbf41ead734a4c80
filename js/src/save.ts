/** The "save PNG" control: download exactly the pixels the canvas shows, named from the caption. */

/** File names are cut to this many characters before ".png" (file systems allow 255 bytes). */
export const MAX_NAME_CHARS = 120;

/**
 * A file name from the view's caption: its " · " parts joined by "_", every run of characters
 * other than letters, digits, "." and "-" replaced by "-" (no path separator, quote or
 * control character survives), no leading dot; "attention.png" when nothing is left.
 */
export function fileName(caption: string, max = MAX_NAME_CHARS): string {
  const parts = caption.split(" · ")
    .map((p) => p.replace(/[^\p{L}\p{N}.-]+/gu, "-").replace(/^[-.]+|-+$/g, ""))
    .filter((p) => p.length > 0);
  const name = Array.from(parts.join("_")).slice(0, max).join("").replace(/[-_.]+$/, "");
  return (name || "attention") + ".png";
}

/** What savePng needs from the page (the real document in the browser; a stand-in in tests). */
export interface Downloader {
  createElement(tag: "a"): HTMLAnchorElement;
  body: { append(node: Node): void };
}

/**
 * Download `canvas` as PNG, named from `caption`: the canvas's own pixels (its backing store,
 * at the device's pixel ratio), through toBlob, an object URL and a temporary link.
 * Resolves with the file name once the download was started.
 */
export function savePng(canvas: HTMLCanvasElement, caption: string, doc: Downloader = document): Promise<string> {
  const name = fileName(caption);
  return new Promise((resolve, reject) => {
    canvas.toBlob((blob) => {
      if (!blob) {
        reject(new Error("save PNG: the canvas is empty"));
        return;
      }
      const url = URL.createObjectURL(blob);
      const link = doc.createElement("a");
      link.href = url;
      link.download = name;
      link.style.display = "none";
      doc.body.append(link);
      link.click();
      link.remove();
      // the browser has taken the blob once click() returns; the URL only has to outlive it
      setTimeout(() => URL.revokeObjectURL(url), 10_000);
      resolve(name);
    }, "image/png");
  });
}
