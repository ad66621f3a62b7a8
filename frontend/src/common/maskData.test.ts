import { describe, expect, it } from "vitest";

import { maskArea, maskFromRgba, maskToRgba, paintDisc, pointInPolygon, readLabel, writeLabel } from "./maskData";

describe("mask helpers", () => {
  it("round-trips a mask through RGBA", () => {
    const mask = Uint8Array.from([0, 1, 1, 0, 0, 1]);
    const rgba = maskToRgba(mask, 3, 2);
    expect(Array.from(rgba.slice(4, 8))).toEqual([255, 255, 255, 255]);
    expect(maskFromRgba(rgba, 3, 2)).toEqual(mask);
    expect(() => maskFromRgba(rgba, 2, 2)).toThrow();
  });

  it("paints and erases a clipped disc and counts the changes", () => {
    const mask = new Uint8Array(10 * 10);
    expect(paintDisc(mask, 10, 10, 0, 0, 2, 1)).toBe(6); // a quarter disc of radius 2 in the corner
    expect(maskArea(mask)).toBe(6);
    expect(paintDisc(mask, 10, 10, 0, 0, 2, 1)).toBe(0);
    expect(paintDisc(mask, 10, 10, 5, 5, 1, 1)).toBe(5);
    expect(paintDisc(mask, 10, 10, 0, 0, 5, 0)).toBe(6);
    expect(maskArea(mask)).toBe(5);
  });

  it("writes one label without touching another's pixels", () => {
    const labels = Uint8Array.from([0, 2, 1, 1, 0]);
    writeLabel(labels, Uint8Array.from([1, 1, 0, 1, 0]), 1);
    expect(Array.from(labels)).toEqual([1, 1, 0, 1, 0]);
    expect(Array.from(readLabel(Uint8Array.from([0, 2, 1, 2]), 2))).toEqual([0, 1, 0, 1]);
  });

  it("tests points against a polygon", () => {
    const square: [number, number][] = [[0, 0], [10, 0], [10, 10], [0, 10]];
    expect(pointInPolygon(5, 5, square)).toBe(true);
    expect(pointInPolygon(15, 5, square)).toBe(false);
  });
});
