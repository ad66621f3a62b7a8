import { describe, expect, it } from "vitest";

import { frameFromMultipart, grayscaleRgba, voiWindow } from "./pixels";

describe("frameFromMultipart", () => {
  it("returns the first part's bytes, binary zeros and CRLFs included", () => {
    const pixels = new Uint8Array([0, 1, 13, 10, 45, 45, 255, 0]);
    const head = new TextEncoder().encode("--b1\r\nContent-Type: application/octet-stream\r\n\r\n");
    const tail = new TextEncoder().encode("\r\n--b1--\r\n");
    const body = new Uint8Array([...head, ...pixels, ...tail]);
    expect(Array.from(frameFromMultipart(body, 'multipart/related; type="application/octet-stream"; boundary=b1')!)).toEqual(Array.from(pixels));
    expect(frameFromMultipart(body, "application/octet-stream")).toBeNull();
  });
});

describe("grey levels", () => {
  it("uses the header's window, else the range of the rescaled values", () => {
    expect(voiWindow([0, 10], 1, 0, 40, 80)).toEqual({ center: 40, width: 80 });
    expect(voiWindow([0, 10], 2, -5, undefined, undefined)).toEqual({ center: 5, width: 20 });
  });

  it("maps the window linearly to 0..255, clipped, MONOCHROME1 inverted", () => {
    const rgba = grayscaleRgba([0, 50, 100, 200], 1, 0, { center: 50, width: 100 }, false);
    expect(Array.from(rgba.filter((_, i) => i % 4 === 0))).toEqual([0, 127, 255, 255]);
    expect(rgba[3]).toBe(255);
    expect(grayscaleRgba([0], 1, 0, { center: 50, width: 100 }, true)[0]).toBe(255);
  });
});
