import { describe, expect, it } from "vitest";
import { fileName, MAX_NAME_CHARS, savePng } from "../src/save";

describe("save PNG", () => {
  it("names the file from the caption, keeping letters and digits of any script", () => {
    expect(fileName("all-MiniLM-L6-v2 · layer 4 · head 7 · no causal mask · “The cat sat on the mat.”"))
      .toBe("all-MiniLM-L6-v2_layer-4_head-7_no-causal-mask_The-cat-sat-on-the-mat.png");
    expect(fileName("toy · layer 1 · mean of 2 heads (AVERAGE, not a head) · causal mask"))
      .toBe("toy_layer-1_mean-of-2-heads-AVERAGE-not-a-head_causal-mask.png");
    expect(fileName("m · layer 0 · head 0 · “مرحبا بالعالم”")).toBe("m_layer-0_head-0_مرحبا-بالعالم.png");
  });

  it("lets no path, markup or control character into the name", () => {
    const name = fileName("../../etc/passwd · <img src=x onerror=alert(1)> · a\u202eb\u0000c\\d:e");
    expect(name).toBe("etc-passwd_img-src-x-onerror-alert-1_a-b-c-d-e.png");
    expect(name).not.toMatch(/[/\\<>:\u0000-\u001f\u202e]/);
    expect(fileName(".hidden")).toBe("hidden.png");
    expect(fileName(" · ⟨ZWSP⟩ · ")).toBe("ZWSP.png");
    expect(fileName("")).toBe("attention.png");
    expect(fileName("····")).toBe("attention.png");
  });

  it("cuts long captions by characters, never inside a surrogate pair", () => {
    const long = fileName("x".repeat(500));
    expect(long).toBe("x".repeat(MAX_NAME_CHARS) + ".png");
    const emoji = fileName("😀".repeat(200));
    expect(Array.from(emoji.replace(/\.png$/, "")).length).toBeLessThanOrEqual(MAX_NAME_CHARS);
    expect(emoji).not.toMatch(/[\ud800-\udbff](?![\udc00-\udfff])/); // no lone high surrogate
  });

  it("downloads the canvas's own PNG through a temporary link", async () => {
    const clicked: { href: string; download: string }[] = [];
    const link = {
      href: "", download: "", style: { display: "" }, removed: false,
      click() { clicked.push({ href: this.href, download: this.download }); },
      remove() { this.removed = true; },
    };
    const appended: unknown[] = [];
    const doc = { createElement: () => link as unknown as HTMLAnchorElement, body: { append: (n: Node) => appended.push(n) } };
    const types: string[] = [];
    const canvas = {
      toBlob(cb: (b: Blob | null) => void, type: string) { types.push(type); cb(new Blob([new Uint8Array([137, 80, 78, 71])], { type })); },
    } as unknown as HTMLCanvasElement;
    const name = await savePng(canvas, "toy · layer 0 · head 1", doc);
    expect(name).toBe("toy_layer-0_head-1.png");
    expect(types).toEqual(["image/png"]);
    expect(clicked).toEqual([{ href: expect.stringMatching(/^blob:/), download: "toy_layer-0_head-1.png" }]);
    expect(appended).toEqual([link]);
    expect(link.removed).toBe(true);
    const empty = { toBlob: (cb: (b: Blob | null) => void) => cb(null) } as unknown as HTMLCanvasElement;
    await expect(savePng(empty, "x", doc)).rejects.toThrow("save PNG: the canvas is empty");
  });
});
