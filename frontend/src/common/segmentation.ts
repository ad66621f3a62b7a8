/**
 * Labelmap layers, brush and eraser on a Cornerstone3D stack viewport (shared by the review
 * viewer and the annotation page).
 *
 * A *layer* is one Cornerstone3D segmentation with a labelmap representation: one derived
 * Uint8 labelmap image per source image of the stack, segments numbered from 1, each with its own
 * colour. The viewer uses one layer per artifact type (masks of different types overlap, which
 * one labelmap cannot hold), each with a single segment; the annotation page may use one layer
 * with several segments. Masks travel as 1-bit PNGs on the instance's pixel grid.
 *
 * Small API:
 * - `layerCreate({ viewportId, layerId, imageIds, segments })` → `LabelmapLayer`
 * - `layerSetVisible(layer, visible)`, `layerSetOpacity(layer, opacity 0..1)`
 * - `layerSetSlice(layer, position, mask, segment)` / `layerGetSlice(layer, position, segment)`
 *   (0/1 `Uint8Array` masks, row-major, Columns × Rows)
 * - `maskFetchPng(url)` → `{ mask, width, height }`; `maskToPngBlob(mask, width, height)` → PNG
 * - `editToolsAdd(toolGroup)` once, then `editModeSet(toolGroup, layer, "brush" | "eraser" | null,
 *   segment, size)`; edits fire `onLayerEdited(layer, callback)` with the positions touched.
 * The pure array helpers (paintDisc, maskArea, …) live in ./maskData and are re-exported here.
 */

import { Enums as CoreEnums, cache, eventTarget, imageLoader, type Types } from "@cornerstonejs/core";
import {
  BrushTool,
  Enums as ToolEnums,
  addTool,
  segmentation,
  utilities as toolUtilities,
  type Types as ToolTypes,
} from "@cornerstonejs/tools";

import { maskFromRgba, maskToRgba, readLabel, writeLabel } from "./maskData";

export * from "./maskData";

const LABELMAP = ToolEnums.SegmentationRepresentations.Labelmap;
export const BRUSH = "ArtiscanBrush";
export const ERASER = "ArtiscanEraser";

export interface SegmentSpec {
  index: number;
  label: string;
  rgb: [number, number, number];
}

export interface LabelmapLayer {
  viewportId: string;
  segmentationId: string;
  /** One labelmap image id per source image, same order as the stack's image ids. */
  labelmapImageIds: string[];
  sourceImageIds: string[];
  segments: SegmentSpec[];
}

/** A layer over the viewport's stack (`imageIds` are the stack's, in order). Hidden segments
 * start visible; colours are set per segment, opacity 0.5. */
export async function layerCreate(options: {
  viewportId: string;
  layerId: string;
  imageIds: string[];
  segments: SegmentSpec[];
}): Promise<LabelmapLayer> {
  const { viewportId, layerId, imageIds, segments } = options;
  const images = imageLoader.createAndCacheDerivedLabelmapImages(imageIds, {
    getDerivedImageId: (ref: string) => `labelmap:${layerId}:${ref}`,
  } as never);
  const labelmapImageIds = images.map((image) => image.imageId);
  segmentation.addSegmentations([
    {
      segmentationId: layerId,
      representation: { type: LABELMAP, data: { imageIds: labelmapImageIds } },
      config: {
        label: layerId,
        segments: Object.fromEntries(segments.map((s) => [s.index, { label: s.label, segmentIndex: s.index }])),
      },
    },
  ]);
  await segmentation.addLabelmapRepresentationToViewport(viewportId, [{ segmentationId: layerId }]);
  for (const s of segments) {
    segmentation.config.color.setSegmentIndexColor(viewportId, layerId, s.index, [...s.rgb, 255] as Types.Color);
  }
  const layer = { viewportId, segmentationId: layerId, labelmapImageIds, sourceImageIds: imageIds, segments };
  layerSetOpacity(layer, 0.5);
  return layer;
}

export function layerSetVisible(layer: LabelmapLayer, visible: boolean): void {
  segmentation.config.visibility.setSegmentationRepresentationVisibility(
    layer.viewportId,
    { segmentationId: layer.segmentationId, type: LABELMAP },
    visible,
  );
}

/** Fill opacity 0..1; the outline follows so a faint fill still shows its border. */
export function layerSetOpacity(layer: LabelmapLayer, opacity: number): void {
  const alpha = Math.max(0, Math.min(1, opacity));
  segmentation.config.style.setStyle(
    { viewportId: layer.viewportId, segmentationId: layer.segmentationId, type: LABELMAP },
    {
      fillAlpha: alpha,
      fillAlphaInactive: alpha,
      renderOutline: true,
      outlineOpacity: Math.min(1, alpha + 0.3),
      outlineOpacityInactive: Math.min(1, alpha + 0.3),
      renderFill: true,
      renderFillInactive: true,
      renderOutlineInactive: true,
    } as never,
  );
}

function labelmapData(layer: LabelmapLayer, position: number): Types.PixelDataTypedArray {
  const image = cache.getImage(layer.labelmapImageIds[position]);
  if (!image?.voxelManager) throw new Error(`labelmap ${position} of ${layer.segmentationId} is not cached`);
  return image.voxelManager.getScalarData();
}

/** Write `mask` (0/1, Columns × Rows) as `segment` on the slice at `position` of the stack. */
export function layerSetSlice(layer: LabelmapLayer, position: number, mask: ArrayLike<number>, segment = 1): void {
  const image = cache.getImage(layer.labelmapImageIds[position]);
  if (!image?.voxelManager) throw new Error(`labelmap ${position} of ${layer.segmentationId} is not cached`);
  const data = image.voxelManager.getScalarData();
  writeLabel(data, mask, segment);
  image.voxelManager.setScalarData(data);
  segmentation.triggerSegmentationEvents.triggerSegmentationDataModified(layer.segmentationId);
}

/** The slice at `position` as a 0/1 mask of `segment`. */
export function layerGetSlice(layer: LabelmapLayer, position: number, segment = 1): Uint8Array {
  return readLabel(labelmapData(layer, position), segment);
}

export function layerRemove(layer: LabelmapLayer): void {
  segmentation.removeSegmentation(layer.segmentationId);
}

/** Decode a PNG mask (any bit depth; inside = bright) fetched with the session cookie. */
export async function maskFetchPng(url: string): Promise<{ mask: Uint8Array; width: number; height: number }> {
  const response = await fetch(url, { credentials: "same-origin" });
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  const bitmap = await createImageBitmap(await response.blob());
  const canvas = document.createElement("canvas");
  canvas.width = bitmap.width;
  canvas.height = bitmap.height;
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  if (!ctx) throw new Error("no 2D canvas");
  ctx.drawImage(bitmap, 0, 0);
  const rgba = ctx.getImageData(0, 0, bitmap.width, bitmap.height).data;
  return { mask: maskFromRgba(rgba, bitmap.width, bitmap.height), width: bitmap.width, height: bitmap.height };
}

/** Encode a mask as a PNG (white = inside), the format the review API stores. */
export async function maskToPngBlob(mask: ArrayLike<number>, width: number, height: number): Promise<Blob> {
  const canvas = document.createElement("canvas");
  canvas.width = width;
  canvas.height = height;
  const ctx = canvas.getContext("2d");
  if (!ctx) throw new Error("no 2D canvas");
  ctx.putImageData(new ImageData(maskToRgba(mask, width, height) as Uint8ClampedArray<ArrayBuffer>, width, height), 0, 0);
  return new Promise((resolve, reject) =>
    canvas.toBlob((blob) => (blob ? resolve(blob) : reject(new Error("PNG encoding failed"))), "image/png"),
  );
}

let toolsAdded = false;

/** Register the brush and eraser (Cornerstone3D's BrushTool with fill/erase circle strategies)
 * in a tool group, passive until `editModeSet` activates one. */
export function editToolsAdd(group: ToolTypes.IToolGroup): void {
  if (!toolsAdded) {
    addTool(BrushTool);
    toolsAdded = true;
  }
  group.addToolInstance(BRUSH, BrushTool.toolName, { activeStrategy: "FILL_INSIDE_CIRCLE" });
  group.addToolInstance(ERASER, BrushTool.toolName, { activeStrategy: "ERASE_INSIDE_CIRCLE" });
  group.setToolPassive(BRUSH);
  group.setToolPassive(ERASER);
}

/**
 * Put the primary mouse button on the brush or eraser for `layer`'s `segment` (`null` gives
 * it back to `fallbackTool`, e.g. window/level). `size` is the brush diameter in screen pixels.
 */
export function editModeSet(
  group: ToolTypes.IToolGroup,
  layer: LabelmapLayer | null,
  mode: "brush" | "eraser" | null,
  options: { segment?: number; size?: number; fallbackTool: string },
): void {
  const primary = [{ mouseButton: ToolEnums.MouseBindings.Primary }];
  group.setToolPassive(BRUSH);
  group.setToolPassive(ERASER);
  if (mode === null || layer === null) {
    group.setToolActive(options.fallbackTool, { bindings: primary });
    return;
  }
  segmentation.activeSegmentation.setActiveSegmentation(layer.viewportId, layer.segmentationId);
  segmentation.segmentIndex.setActiveSegmentIndex(layer.segmentationId, options.segment ?? 1);
  group.setToolPassive(options.fallbackTool);
  const tool = mode === "brush" ? BRUSH : ERASER;
  group.setToolActive(tool, { bindings: primary });
  if (options.size) toolUtilities.segmentation.setBrushSizeForToolGroup(group.id, options.size, tool);
}

/** Call `callback` whenever a brush or eraser stroke (or `layerSetSlice`) changes the layer. */
export function onLayerEdited(layer: LabelmapLayer, callback: () => void): () => void {
  const listener = (event: Event): void => {
    const detail = (event as CustomEvent<{ segmentationId?: string }>).detail;
    if (detail?.segmentationId === layer.segmentationId) callback();
  };
  eventTarget.addEventListener(ToolEnums.Events.SEGMENTATION_DATA_MODIFIED, listener);
  return () => eventTarget.removeEventListener(ToolEnums.Events.SEGMENTATION_DATA_MODIFIED, listener);
}

/** The stack position of an image id, for callers that track edits per slice. */
export function positionOf(layer: LabelmapLayer, imageId: string): number {
  return layer.sourceImageIds.indexOf(imageId);
}

export const STACK_NEW_IMAGE = CoreEnums.Events.STACK_NEW_IMAGE;
