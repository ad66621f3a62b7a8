// The artifact masks drawn on a 2D canvas laid over the Cornerstone3D viewport's canvas, and the
// brush/eraser that corrects one of them. One composited image per frame (./raster), placed with
// the viewport's own image → canvas mapping, so it follows scroll, zoom, pan and resize on both
// of Cornerstone3D's rendering paths.

import { utilities, type Types } from "@cornerstonejs/core";

import { ARTIFACT_RGB, type ArtifactType } from "../common/artifacts";
import { paintDisc } from "../common/maskData";
import type { OverlayState } from "./overlays";
import { canvasToImage, imageToCanvasFrom, rasterizeOverlay, type ImageToCanvas } from "./raster";

export interface BrushTarget {
  type: ArtifactType;
  position: number;
  mode: "brush" | "eraser";
  /** Radius in the patient's millimetres (what Cornerstone3D's brush size meant). */
  radiusMm: number;
}

export class MaskOverlay {
  readonly canvas: HTMLCanvasElement;
  private ctx: CanvasRenderingContext2D;
  private scratch = document.createElement("canvas");
  private scratchCtx: CanvasRenderingContext2D;
  private pixels: ImageData | null = null;
  /** type → stack position → 0/1 mask (Columns × Rows). */
  private masks = new Map<ArtifactType, Map<number, Uint8Array>>();
  private brush: BrushTarget | null = null;
  private stroke: [number, number] | null = null;
  private edited = new Set<string>();

  constructor(
    private viewport: Types.IStackViewport,
    private state: OverlayState,
    /** Columns, rows and pixel spacing (mm, row then column) of the slice at a position. */
    private grid: (position: number) => { columns: number; rows: number; spacing: [number, number] },
  ) {
    this.canvas = document.createElement("canvas");
    this.canvas.className = "mask-overlay";
    Object.assign(this.canvas.style, {
      position: "absolute", left: "0", top: "0", width: "100%", height: "100%", pointerEvents: "none",
    });
    // Over the viewport's own canvas, inside its positioned parent.
    const host = viewport.canvas.parentElement ?? viewport.element;
    host.append(this.canvas);
    const ctx = this.canvas.getContext("2d");
    const scratchCtx = this.scratch.getContext("2d");
    if (!ctx || !scratchCtx) throw new Error("no 2D canvas");
    this.ctx = ctx;
    this.scratchCtx = scratchCtx;
    this.canvas.addEventListener("mousedown", (e) => this.pointer(e, "down"));
    window.addEventListener("mousemove", (e) => this.pointer(e, "move"));
    window.addEventListener("mouseup", (e) => this.pointer(e, "up"));
  }

  set(type: ArtifactType, position: number, mask: Uint8Array): void {
    let byPosition = this.masks.get(type);
    if (!byPosition) this.masks.set(type, (byPosition = new Map()));
    byPosition.set(position, mask);
  }

  /** Forget a type's mask at a position (its finding was rejected): nothing is drawn there. */
  delete(type: ArtifactType, position: number): boolean {
    return this.masks.get(type)?.delete(position) ?? false;
  }

  get(type: ArtifactType, position: number): Uint8Array | undefined {
    return this.masks.get(type)?.get(position);
  }

  /** Whether the brush changed this type's mask at this position since `startEditing`. */
  wasEdited(type: ArtifactType, position: number): boolean {
    return this.edited.has(`${type}:${position}`);
  }

  /** Brush or eraser on one type's mask at one position (null: no editing; the mouse goes
   * back to the viewport's tools). Painting happens only on that slice. */
  setBrush(target: BrushTarget | null): void {
    if (target && !this.brush) this.edited.clear();
    this.brush = target;
    this.stroke = null;
    this.canvas.style.pointerEvents = target ? "auto" : "none";
    this.canvas.style.cursor = target ? "crosshair" : "";
    if (target && !this.get(target.type, target.position)) {
      const { columns, rows } = this.grid(target.position);
      this.set(target.type, target.position, new Uint8Array(columns * rows));
    }
  }

  /** Where the image of the current slice lies on the canvas (CSS pixels). */
  mapping(): ImageToCanvas | null {
    const imageId = this.viewport.getCurrentImageId();
    if (!imageId) return null;
    const { columns, rows } = this.grid(this.viewport.getCurrentImageIdIndex());
    const corner = (col: number, row: number): Types.Point2 | null => {
      const world = utilities.imageToWorldCoords(imageId, [col, row]);
      return world ? this.viewport.worldToCanvas(world) : null;
    };
    const a = corner(-0.5, -0.5);
    const b = corner(columns - 0.5, -0.5);
    const c = corner(-0.5, rows - 0.5);
    return a && b && c ? imageToCanvasFrom(a, b, c, columns, rows) : null;
  }

  /** Redraw for the slice on screen: call after every render of the viewport. */
  draw(): void {
    const dpr = window.devicePixelRatio || 1;
    const width = Math.round(this.canvas.clientWidth * dpr);
    const height = Math.round(this.canvas.clientHeight * dpr);
    if (this.canvas.width !== width || this.canvas.height !== height) {
      this.canvas.width = width;
      this.canvas.height = height;
    }
    const ctx = this.ctx;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.clearRect(0, 0, width, height);
    const position = this.viewport.getCurrentImageIdIndex();
    const layers = this.state.visibleTypes().map((type) => ({
      mask: this.masks.get(type)?.get(position) ?? null,
      rgb: ARTIFACT_RGB[type],
      opacity: this.state.get(type)?.opacity ?? 0,
    }));
    if (!layers.some((l) => l.mask)) return;
    const map = this.mapping();
    if (!map) return;
    const { columns, rows } = this.grid(position);
    if (!this.pixels || this.pixels.width !== columns || this.pixels.height !== rows) {
      this.pixels = new ImageData(columns, rows);
      this.scratch.width = columns;
      this.scratch.height = rows;
    }
    if (!rasterizeOverlay(layers, columns, rows, this.pixels.data)) return;
    this.scratchCtx.putImageData(this.pixels, 0, 0);
    const [a, b] = map.colStep;
    const [c, d] = map.rowStep;
    ctx.setTransform(a * dpr, b * dpr, c * dpr, d * dpr, map.origin[0] * dpr, map.origin[1] * dpr);
    ctx.imageSmoothingEnabled = false; // mask pixels stay crisp squares
    ctx.drawImage(this.scratch, 0, 0);
  }

  private pointer(event: MouseEvent, phase: "down" | "move" | "up"): void {
    const brush = this.brush;
    if (!brush || (phase !== "down" && !this.stroke)) return;
    if (phase === "up") {
      this.stroke = null;
      return;
    }
    if (phase === "down" && event.button !== 0) return;
    event.preventDefault();
    event.stopPropagation(); // the viewport's tools (window/level) do not see the stroke
    if (this.viewport.getCurrentImageIdIndex() !== brush.position) return;
    const map = this.mapping();
    const mask = this.get(brush.type, brush.position);
    if (!map || !mask) return;
    const rect = this.canvas.getBoundingClientRect();
    const at = canvasToImage(map, event.clientX - rect.left, event.clientY - rect.top);
    const { columns, rows, spacing } = this.grid(brush.position);
    const radius = brush.radiusMm / ((spacing[0] + spacing[1]) / 2);
    const from = this.stroke ?? at;
    // Discs along the segment since the last event, so a fast stroke leaves no gaps.
    const steps = Math.max(1, Math.ceil(Math.hypot(at[0] - from[0], at[1] - from[1]) / Math.max(0.5, radius / 2)));
    const value = brush.mode === "brush" ? 1 : 0;
    for (let s = 1; s <= steps; s++) {
      const t = s / steps;
      paintDisc(mask, columns, rows, from[0] + (at[0] - from[0]) * t, from[1] + (at[1] - from[1]) * t, radius, value);
    }
    this.stroke = at;
    this.edited.add(`${brush.type}:${brush.position}`);
    this.draw();
  }
}
