// The first image, before Cornerstone3D: this small module (no Cornerstone3D in it) reads the
// series' metadata (already asked for by the page), fetches the middle slice's frame over
// WADO-RS and draws it at full resolution on a canvas over the viewport, with the window the
// header gives (else the pixels' range), fitted like Cornerstone3D fits it. Only then does it
// load the viewer (~4 MB of JavaScript whose evaluation holds the main thread for several
// hundred milliseconds), which replaces the canvas with its own viewport at its first render.
// Anything it cannot draw (compressed or colour frames, a failed request) is left to the viewer.

import { DICOMWEB_ROOT, frameCount, seriesMetadataShared, value, type DicomJson } from "../api/dicomweb";
import { frameFromMultipart, grayscaleRgba, voiWindow } from "./pixels";

const root = document.querySelector<HTMLElement>("#viewer");
// Exactly what Cornerstone3D's WADO-RS loader sends, so a frame the browser may keep (private,
// max-age) is found again under the same Vary: Accept.
const FRAME_ACCEPT = "multipart/related; type=application/octet-stream; transfer-syntax=*";

async function preview(): Promise<void> {
  if (!root) return;
  const studyUid = root.dataset.study ?? "";
  const seriesUid = root.dataset.series ?? "";
  const items = await seriesMetadataShared(studyUid, seriesUid);
  performance.mark("artiscan:metadata");
  if (items.length === 0) return;
  const item: DicomJson = items[Math.floor(items.length / 2)];
  const photometric = value<string>(item, "00280004") ?? "MONOCHROME2";
  const bits = Number(value(item, "00280100") ?? 16);
  const syntax = value<string>(item, "00020010");
  if (!photometric.startsWith("MONOCHROME") || Number(value(item, "00280002") ?? 1) !== 1) return;
  if (items.some((i) => frameCount(i) > 1)) return; // frames and their rescale: the viewer's
  if ((bits !== 8 && bits !== 16) || syntax === "1.2.840.10008.1.2.2") return; // big endian
  const rows = Number(value(item, "00280010") ?? 0);
  const columns = Number(value(item, "00280011") ?? 0);
  const sop = value<string>(item, "00080018");
  if (!rows || !columns || !sop) return;
  const url = `${DICOMWEB_ROOT}/studies/${studyUid}/series/${seriesUid}/instances/${sop}/frames/1`;
  const early = (window as { artiscanPreload?: { frame?: { sop: string; response: Promise<Response> } } }).artiscanPreload?.frame;
  const response = await (early?.sop === sop
    ? early.response
    : fetch(url, { credentials: "same-origin", headers: { Accept: FRAME_ACCEPT } }));
  if (!response.ok) return;
  const bytes = frameFromMultipart(new Uint8Array(await response.arrayBuffer()), response.headers.get("Content-Type") ?? "");
  if (!bytes || bytes.byteLength < rows * columns * (bits / 8)) return;
  const signed = Number(value(item, "00280103") ?? 0) === 1;
  const buffer = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + rows * columns * (bits / 8));
  const stored = bits === 8 ? (signed ? new Int8Array(buffer) : new Uint8Array(buffer)) : signed ? new Int16Array(buffer) : new Uint16Array(buffer);
  const slope = Number(value(item, "00281053") ?? 1) || 1;
  const intercept = Number(value(item, "00281052") ?? 0) || 0;
  const voi = voiWindow(stored, slope, intercept, value(item, "00281050"), value(item, "00281051"));
  const rgba = grayscaleRgba(stored, slope, intercept, voi, photometric === "MONOCHROME1");

  const wrap = document.querySelector<HTMLElement>("#viewport");
  if (!wrap || root.dataset.firstImageMs) return; // the viewer got there first
  const image = document.createElement("canvas");
  image.width = columns;
  image.height = rows;
  image.getContext("2d")?.putImageData(new ImageData(rgba as Uint8ClampedArray<ArrayBuffer>, columns, rows), 0, 0);
  const canvas = document.createElement("canvas");
  canvas.id = "viewport-preview";
  canvas.className = "viewport-preview";
  wrap.parentElement?.insertBefore(canvas, wrap.nextSibling);
  const dpr = window.devicePixelRatio || 1;
  canvas.width = Math.round(wrap.clientWidth * dpr);
  canvas.height = Math.round(wrap.clientHeight * dpr);
  const ctx = canvas.getContext("2d");
  if (!ctx) return;
  const spacing = (item["00280030"]?.Value as number[] | undefined) ?? [1, 1];
  const height = rows * (Number(spacing[0]) || 1);
  const width = columns * (Number(spacing[1]) || 1);
  const scale = Math.min(canvas.width / width, canvas.height / height);
  ctx.fillStyle = "#000";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  ctx.drawImage(image, (canvas.width - width * scale) / 2, (canvas.height - height * scale) / 2, width * scale, height * scale);
  performance.mark("artiscan:first-image");
  root.dataset.firstImageMs = performance.now().toFixed(0);
  root.dataset.firstImageBy = "preview";
  const message = document.querySelector<HTMLElement>("#viewport-message");
  if (message && message.dataset.state !== "error") message.hidden = true;
}

// The viewer starts after the preview, drawn or not (its URL is Django's hashed static name).
void preview()
  .catch(() => undefined)
  .finally(() => {
    const viewer = root?.dataset.app;
    if (viewer) void import(/* @vite-ignore */ viewer);
  });
