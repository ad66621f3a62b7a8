// Artifact masks as one RGBA overlay image: plain arrays, no DOM, so it is unit tested. The
// viewer draws the result on a 2D canvas over the Cornerstone3D viewport (one drawImage per
// frame), which costs the same on the CPU and the WebGL rendering paths; Cornerstone3D's
// labelmap path re-rasterised every labelmap on every slice change (1–2 frames/s on software
// WebGL) and does not exist at all on its CPU path.

export interface RasterLayer {
  /** 0/1 (or 0/non-zero) values, row-major, width × height; null = nothing on this slice. */
  mask: ArrayLike<number> | null;
  rgb: readonly [number, number, number];
  /** Fill opacity 0..1; the outline is drawn at opacity + 0.3 so a faint fill keeps its border. */
  opacity: number;
}

export function outlineOpacity(opacity: number): number {
  return Math.min(1, opacity + 0.3);
}

/**
 * Composite `layers` (first = bottom) into `out` (RGBA, non-premultiplied, width × height × 4,
 * cleared first): each mask's inside in its colour at its opacity, its border pixels (inside,
 * with a 4-neighbour outside or on the image's edge) at the outline opacity. Returns `out`, or
 * null when nothing is drawn (every mask empty or absent, or every opacity 0).
 */
export function rasterizeOverlay(
  layers: RasterLayer[],
  width: number,
  height: number,
  out: Uint8ClampedArray = new Uint8ClampedArray(width * height * 4),
): Uint8ClampedArray | null {
  if (out.length !== width * height * 4) throw new Error(`expected ${width * height * 4} RGBA values, got ${out.length}`);
  out.fill(0);
  let drawn = false;
  for (const layer of layers) {
    const mask = layer.mask;
    if (!mask || layer.opacity <= 0) continue;
    if (mask.length !== width * height) throw new Error(`expected ${width * height} mask values, got ${mask.length}`);
    const [r, g, b] = layer.rgb;
    const fill = Math.max(0, Math.min(1, layer.opacity));
    const edge = outlineOpacity(fill);
    for (let y = 0; y < height; y++) {
      const row = y * width;
      for (let x = 0; x < width; x++) {
        const i = row + x;
        if (!mask[i]) continue;
        const border =
          x === 0 || y === 0 || x === width - 1 || y === height - 1 ||
          !mask[i - 1] || !mask[i + 1] || !mask[i - width] || !mask[i + width];
        const a = border ? edge : fill;
        const o = i * 4;
        const below = out[o + 3] / 255;
        const alpha = a + below * (1 - a);
        // "source over" on non-premultiplied colours.
        out[o] = (r * a + out[o] * below * (1 - a)) / alpha;
        out[o + 1] = (g * a + out[o + 1] * below * (1 - a)) / alpha;
        out[o + 2] = (b * a + out[o + 2] * below * (1 - a)) / alpha;
        out[o + 3] = alpha * 255;
        drawn = true;
      }
    }
  }
  return drawn ? out : null;
}

/** An affine map from image pixel coordinates (col, row; pixel centres on integers) to canvas
 * CSS pixels, from where three image points land on the canvas. */
export interface ImageToCanvas {
  /** Canvas position of the image's top-left corner (-0.5, -0.5). */
  origin: [number, number];
  /** Canvas displacement of one pixel step along the columns and along the rows. */
  colStep: [number, number];
  rowStep: [number, number];
}

export function imageToCanvasFrom(
  topLeft: ArrayLike<number>,
  topRight: ArrayLike<number>,
  bottomLeft: ArrayLike<number>,
  width: number,
  height: number,
): ImageToCanvas {
  return {
    origin: [topLeft[0], topLeft[1]],
    colStep: [(topRight[0] - topLeft[0]) / width, (topRight[1] - topLeft[1]) / width],
    rowStep: [(bottomLeft[0] - topLeft[0]) / height, (bottomLeft[1] - topLeft[1]) / height],
  };
}

/** The image pixel coordinates (col, row) under canvas point (x, y). */
export function canvasToImage(map: ImageToCanvas, x: number, y: number): [number, number] {
  const [a, b] = map.colStep;
  const [c, d] = map.rowStep;
  const det = a * d - b * c;
  if (det === 0) return [NaN, NaN];
  const dx = x - map.origin[0];
  const dy = y - map.origin[1];
  const u = (d * dx - c * dy) / det;
  const v = (-b * dx + a * dy) / det;
  return [u - 0.5, v - 0.5];
}
