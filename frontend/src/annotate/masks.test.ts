import { describe, expect, it } from "vitest";

import { History, fillPolygon, floodFill, rleDecode, rleEncode } from "./masks";

describe("annotate masks", () => {
  it("round-trips run lengths in the server's format", () => {
    const mask = Uint8Array.from([0, 0, 0, 1, 1, 0, 0, 0, 0, 0]);
    expect(rleEncode(mask)).toEqual([3, 2, 5]);
    expect(rleEncode(Uint8Array.from([1, 1, 1]))).toEqual([0, 3]);
    expect(Array.from(rleDecode([3, 2, 5], 10))).toEqual(Array.from(mask));
    expect(() => rleDecode([3, 2], 10)).toThrow();
  });

  it("fills a polygon by pixel centres", () => {
    const mask = new Uint8Array(16);
    fillPolygon(mask, 4, 4, [[1, 1], [3, 1], [3, 3], [1, 3]]);
    expect(Array.from(mask)).toEqual([0, 0, 0, 0, 0, 1, 1, 0, 0, 1, 1, 0, 0, 0, 0, 0]);
  });

  it("flood-fills the connected region within the tolerance", () => {
    const pixels = [10, 10, 90, 10, 11, 90, 90, 90, 10];
    const mask = new Uint8Array(9);
    expect(floodFill(mask, pixels, 3, 3, 0, 0, 5)).toBe(4);
    expect(Array.from(mask)).toEqual([1, 1, 0, 1, 1, 0, 0, 0, 0]); // the far corner is not connected
  });

  it("undoes and redoes edits, and a new edit clears the redo", () => {
    const history = new History();
    const a = Uint8Array.from([0, 0]);
    const b = Uint8Array.from([1, 0]);
    history.push({ position: 0, type: "motion", before: a, after: b });
    history.push({ position: 0, type: "motion", before: b, after: b }); // no change: ignored
    expect(history.sizes).toEqual([1, 0]);
    expect(history.undo()?.before).toBe(a);
    expect(history.redo()?.after).toBe(b);
    history.undo();
    history.push({ position: 1, type: "noise", before: a, after: b });
    expect(history.sizes).toEqual([1, 0]);
  });
});
