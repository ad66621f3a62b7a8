// Pure mask helpers of the annotate page (no Cornerstone, no DOM): run-length wire format,
// polygon fill, threshold-assisted flood fill, undo/redo history. Masks are Uint8Array 0/1,
// row-major, width = Columns, height = Rows (the instance's pixel grid).

import { pointInPolygon } from "../common/maskData";

/** Run lengths over the row-major pixels, starting with a run of zeros (annotation/rle.py). */
export function rleEncode(mask: ArrayLike<number>): number[] {
  const runs: number[] = [];
  let current = 0;
  let length = 0;
  for (let i = 0; i < mask.length; i++) {
    const v = mask[i] ? 1 : 0;
    if (v === current) {
      length++;
    } else {
      runs.push(length);
      current = v;
      length = 1;
    }
  }
  runs.push(length);
  return runs;
}

export function rleDecode(runs: number[], size: number): Uint8Array {
  const mask = new Uint8Array(size);
  let at = 0;
  runs.forEach((run, k) => {
    if (k % 2 === 1) mask.fill(1, at, Math.min(size, at + run));
    at += run;
  });
  if (at !== size) throw new Error(`mask covers ${at} pixels, the image has ${size}`);
  return mask;
}

/** Set every pixel whose centre lies inside `polygon` ((col, row) image coordinates). */
export function fillPolygon(mask: Uint8Array, width: number, height: number, polygon: [number, number][]): number {
  if (polygon.length < 3) return 0;
  const cols = polygon.map((p) => p[0]);
  const rows = polygon.map((p) => p[1]);
  const c0 = Math.max(0, Math.floor(Math.min(...cols)));
  const c1 = Math.min(width - 1, Math.ceil(Math.max(...cols)));
  const r0 = Math.max(0, Math.floor(Math.min(...rows)));
  const r1 = Math.min(height - 1, Math.ceil(Math.max(...rows)));
  let changed = 0;
  for (let r = r0; r <= r1; r++) {
    for (let c = c0; c <= c1; c++) {
      const i = r * width + c;
      if (!mask[i] && pointInPolygon(c + 0.5, r + 0.5, polygon)) {
        mask[i] = 1;
        changed++;
      }
    }
  }
  return changed;
}

/**
 * Threshold-assisted fill: add the 4-connected region around (`col`, `row`) whose intensities lie
 * within `tolerance` of the seed's. Returns the number of pixels added.
 */
export function floodFill(
  mask: Uint8Array,
  pixels: ArrayLike<number>,
  width: number,
  height: number,
  col: number,
  row: number,
  tolerance: number,
): number {
  if (col < 0 || row < 0 || col >= width || row >= height) return 0;
  const seed = pixels[row * width + col];
  const seen = new Uint8Array(width * height);
  const stack = [row * width + col];
  seen[stack[0]] = 1;
  let changed = 0;
  while (stack.length) {
    const i = stack.pop() as number;
    if (Math.abs(pixels[i] - seed) > tolerance) continue;
    if (!mask[i]) {
      mask[i] = 1;
      changed++;
    }
    const r = Math.floor(i / width);
    const c = i - r * width;
    for (const [dr, dc] of [[1, 0], [-1, 0], [0, 1], [0, -1]]) {
      const rr = r + dr;
      const cc = c + dc;
      if (rr < 0 || cc < 0 || rr >= height || cc >= width) continue;
      const j = rr * width + cc;
      if (!seen[j]) {
        seen[j] = 1;
        stack.push(j);
      }
    }
  }
  return changed;
}

export interface Edit {
  position: number;
  type: string;
  before: Uint8Array;
  after: Uint8Array;
}

/** Undo/redo of mask edits (each edit: one type on one slice, before and after). */
export class History {
  private done: Edit[] = [];
  private undone: Edit[] = [];

  constructor(private limit = 100) {}

  push(edit: Edit): void {
    if (sameMask(edit.before, edit.after)) return;
    this.done.push(edit);
    if (this.done.length > this.limit) this.done.shift();
    this.undone = [];
  }

  undo(): Edit | undefined {
    const edit = this.done.pop();
    if (edit) this.undone.push(edit);
    return edit;
  }

  redo(): Edit | undefined {
    const edit = this.undone.pop();
    if (edit) this.done.push(edit);
    return edit;
  }

  get sizes(): [number, number] {
    return [this.done.length, this.undone.length];
  }
}

export function sameMask(a: ArrayLike<number>, b: ArrayLike<number>): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (!a[i] !== !b[i]) return false;
  return true;
}
