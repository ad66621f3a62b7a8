// Grey-level frames as plain arrays (no DOM): the WADO-RS multipart body, the VOI window and the
// RGBA pixels the first-image preview draws. Unit tested.

/** The first part's body of a multipart/related answer, or null if it is not one. */
export function frameFromMultipart(body: Uint8Array, contentType: string): Uint8Array | null {
  const match = /boundary="?([^";]+)"?/i.exec(contentType);
  if (!match) return null;
  const text = (bytes: string): Uint8Array => new TextEncoder().encode(bytes);
  const find = (needle: Uint8Array, from: number): number => {
    outer: for (let i = from; i <= body.length - needle.length; i++) {
      for (let j = 0; j < needle.length; j++) if (body[i + j] !== needle[j]) continue outer;
      return i;
    }
    return -1;
  };
  const open = find(text(`--${match[1]}`), 0);
  if (open < 0) return null;
  const headersEnd = find(text("\r\n\r\n"), open);
  if (headersEnd < 0) return null;
  const start = headersEnd + 4;
  const end = find(text(`\r\n--${match[1]}`), start);
  return end < 0 ? null : body.subarray(start, end);
}

export interface VoiWindow {
  center: number;
  width: number;
}

/** The header's first window (center/width, DICOM JSON values), else the modality values'
 * range, as Cornerstone3D picks its default VOI. */
export function voiWindow(stored: ArrayLike<number>, slope: number, intercept: number, center: unknown, width: unknown): VoiWindow {
  const c = Number(center);
  const w = Number(width);
  if (Number.isFinite(c) && Number.isFinite(w) && w > 0) return { center: c, width: w };
  let min = Infinity;
  let max = -Infinity;
  for (let i = 0; i < stored.length; i++) {
    const v = stored[i];
    if (v < min) min = v;
    if (v > max) max = v;
  }
  if (!Number.isFinite(min)) return { center: 0, width: 1 };
  const lo = min * slope + intercept;
  const hi = max * slope + intercept;
  return { center: (lo + hi) / 2, width: Math.max(1, hi - lo) };
}

/** Opaque RGBA grey levels of stored values through rescale and a linear window (MONOCHROME1
 * inverted). */
export function grayscaleRgba(stored: ArrayLike<number>, slope: number, intercept: number, window: VoiWindow, invert: boolean): Uint8ClampedArray {
  const out = new Uint8ClampedArray(stored.length * 4);
  const lower = window.center - window.width / 2;
  const k = 255 / window.width;
  for (let i = 0; i < stored.length; i++) {
    let g = Math.round((stored[i] * slope + intercept - lower) * k);
    g = g < 0 ? 0 : g > 255 ? 255 : g;
    if (invert) g = 255 - g;
    const o = i * 4;
    out[o] = g;
    out[o + 1] = g;
    out[o + 2] = g;
    out[o + 3] = 255;
  }
  return out;
}
