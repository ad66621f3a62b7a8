/**
 * Binary masks as plain arrays: no Cornerstone, no DOM beyond what the caller passes, so they run
 * in unit tests. A mask is a `Uint8Array` of `width × height` values, row-major (index
 * `row * width + col`), 0 = background, non-zero = inside; the pixel grid is the DICOM instance's
 * (Columns = width, Rows = height), the same grid as the 1-bit PNGs the API serves.
 */

/** A mask from decoded RGBA pixels (e.g. `ImageData.data` of a 1-bit PNG): inside where red > 127. */
export function maskFromRgba(rgba: ArrayLike<number>, width: number, height: number): Uint8Array {
  if (rgba.length !== width * height * 4) {
    throw new Error(`expected ${width * height * 4} RGBA values, got ${rgba.length}`);
  }
  const mask = new Uint8Array(width * height);
  for (let i = 0; i < mask.length; i++) mask[i] = rgba[i * 4] > 127 ? 1 : 0;
  return mask;
}

/** RGBA pixels of a mask: white where inside, black elsewhere, opaque (what the API stores). */
export function maskToRgba(mask: ArrayLike<number>, width: number, height: number): Uint8ClampedArray {
  if (mask.length !== width * height) throw new Error(`expected ${width * height} mask values, got ${mask.length}`);
  const rgba = new Uint8ClampedArray(width * height * 4);
  for (let i = 0; i < mask.length; i++) {
    const v = mask[i] ? 255 : 0;
    rgba[i * 4] = v;
    rgba[i * 4 + 1] = v;
    rgba[i * 4 + 2] = v;
    rgba[i * 4 + 3] = 255;
  }
  return rgba;
}

/**
 * Set every pixel within `radius` pixels of (`col`, `row`) to `value` (1 = brush, 0 = eraser),
 * clipped to the image. Returns how many pixels changed.
 */
export function paintDisc(
  mask: Uint8Array,
  width: number,
  height: number,
  col: number,
  row: number,
  radius: number,
  value: 0 | 1,
): number {
  let changed = 0;
  const r2 = radius * radius;
  const r0 = Math.max(0, Math.floor(row - radius));
  const r1 = Math.min(height - 1, Math.ceil(row + radius));
  const c0 = Math.max(0, Math.floor(col - radius));
  const c1 = Math.min(width - 1, Math.ceil(col + radius));
  for (let r = r0; r <= r1; r++) {
    for (let c = c0; c <= c1; c++) {
      if ((r - row) ** 2 + (c - col) ** 2 > r2) continue;
      const i = r * width + c;
      if (mask[i] !== value) {
        mask[i] = value;
        changed++;
      }
    }
  }
  return changed;
}

/** The number of inside pixels. */
export function maskArea(mask: ArrayLike<number>): number {
  let n = 0;
  for (let i = 0; i < mask.length; i++) if (mask[i]) n++;
  return n;
}

/** Copy `source` (0/1) into `target` as `label` where inside, leaving other labels of `target` alone
 * except where `source` is outside and `target` holds `label` (cleared to 0). */
export function writeLabel(target: { [i: number]: number; length: number }, source: ArrayLike<number>, label: number): void {
  if (target.length !== source.length) throw new Error("mask sizes differ");
  for (let i = 0; i < source.length; i++) {
    if (source[i]) target[i] = label;
    else if (target[i] === label) target[i] = 0;
  }
}

/** The pixels of `labels` equal to `label`, as a 0/1 mask. */
export function readLabel(labels: ArrayLike<number>, label: number): Uint8Array {
  const mask = new Uint8Array(labels.length);
  for (let i = 0; i < labels.length; i++) mask[i] = labels[i] === label ? 1 : 0;
  return mask;
}

/** Whether the point (x, y) lies inside the polygon (even-odd rule); coordinates in pixels. */
export function pointInPolygon(x: number, y: number, polygon: [number, number][]): boolean {
  let inside = false;
  for (let i = 0, j = polygon.length - 1; i < polygon.length; j = i++) {
    const [xi, yi] = polygon[i];
    const [xj, yj] = polygon[j];
    if (yi > y !== yj > y && x < ((xj - xi) * (y - yi)) / (yj - yi) + xi) inside = !inside;
  }
  return inside;
}
