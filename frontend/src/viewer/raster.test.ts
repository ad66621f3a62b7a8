import { describe, expect, it } from "vitest";

import { canvasToImage, imageToCanvasFrom, outlineOpacity, rasterizeOverlay } from "./raster";

const RED = [255, 0, 0] as const;
const GREEN = [0, 255, 0] as const;

function square(width: number, height: number, x0: number, y0: number, x1: number, y1: number): Uint8Array {
  const mask = new Uint8Array(width * height);
  for (let y = y0; y < y1; y++) for (let x = x0; x < x1; x++) mask[y * width + x] = 1;
  return mask;
}

const pixel = (out: Uint8ClampedArray, width: number, x: number, y: number): number[] =>
  Array.from(out.slice((y * width + x) * 4, (y * width + x) * 4 + 4));

describe("rasterizeOverlay", () => {
  it("fills the inside at the opacity, outlines the border stronger, leaves the outside clear", () => {
    const out = rasterizeOverlay([{ mask: square(8, 6, 2, 1, 6, 5), rgb: RED, opacity: 0.5 }], 8, 6);
    expect(out).not.toBeNull();
    expect(pixel(out!, 8, 3, 2)).toEqual([255, 0, 0, 128]); // inside
    expect(pixel(out!, 8, 2, 1)).toEqual([255, 0, 0, Math.round(outlineOpacity(0.5) * 255)]); // border
    expect(pixel(out!, 8, 0, 0)).toEqual([0, 0, 0, 0]); // outside
    expect(pixel(out!, 8, 6, 3)).toEqual([0, 0, 0, 0]);
  });

  it("puts a later layer over an earlier one and skips hidden or empty ones", () => {
    const a = square(6, 6, 0, 0, 6, 6);
    const out = rasterizeOverlay(
      [
        { mask: a, rgb: RED, opacity: 1 },
        { mask: a, rgb: GREEN, opacity: 0.5 },
      ],
      6,
      6,
    )!;
    expect(pixel(out, 6, 2, 2)).toEqual([128, 128, 0, 255]);
    expect(rasterizeOverlay([{ mask: a, rgb: RED, opacity: 0 }], 6, 6)).toBeNull();
    expect(rasterizeOverlay([{ mask: null, rgb: RED, opacity: 1 }, { mask: new Uint8Array(36), rgb: GREEN, opacity: 1 }], 6, 6)).toBeNull();
  });

  it("clears what the previous slice left in a reused buffer", () => {
    const buffer = new Uint8ClampedArray(4 * 4 * 4);
    rasterizeOverlay([{ mask: square(4, 4, 0, 0, 2, 2), rgb: RED, opacity: 1 }], 4, 4, buffer);
    rasterizeOverlay([{ mask: square(4, 4, 2, 2, 4, 4), rgb: RED, opacity: 1 }], 4, 4, buffer);
    expect(pixel(buffer, 4, 0, 0)).toEqual([0, 0, 0, 0]);
    expect(pixel(buffer, 4, 3, 3)[3]).toBe(255);
  });

  it("refuses a mask on another grid", () => {
    expect(() => rasterizeOverlay([{ mask: new Uint8Array(10), rgb: RED, opacity: 1 }], 4, 4)).toThrow(/16 mask values/);
  });
});

describe("image ↔ canvas", () => {
  it("inverts a zoomed, panned mapping to pixel centres", () => {
    // A 64 × 32 image drawn 4× larger with its top-left corner at (100, 50).
    const map = imageToCanvasFrom([100, 50], [100 + 256, 50], [100, 50 + 128], 64, 32);
    expect(canvasToImage(map, 100 + 2, 50 + 2)).toEqual([0, 0]); // centre of pixel (0, 0)
    expect(canvasToImage(map, 100 + 4 * 10.5, 50 + 4 * 3.5)).toEqual([10, 3]);
  });
});
