// The region of diagnostic interest: a polygon drawn on the image in image pixel coordinates
// ([col, row]), shown on an SVG layer over the viewport that follows zoom, pan and resize.

import { utilities, type Types } from "@cornerstonejs/core";

export type Point = [number, number];

const SVG = "http://www.w3.org/2000/svg";

export class RoiLayer {
  private points: Point[] = [];
  private saved: Point[] | null = null;
  private drawing = false;
  private cursor: Point | null = null;

  constructor(
    private svg: SVGSVGElement,
    private viewport: Types.IStackViewport,
    private size: () => [number, number],
    private onFinish: (polygon: Point[]) => void,
  ) {
    svg.addEventListener("click", (e) => this.click(e));
    svg.addEventListener("mousemove", (e) => {
      if (!this.drawing) return;
      this.cursor = this.toImage(e);
      this.redraw();
    });
  }

  get isDrawing(): boolean {
    return this.drawing;
  }

  start(): void {
    this.drawing = true;
    this.points = [];
    this.svg.classList.add("drawing");
    this.redraw();
  }

  cancel(): void {
    this.drawing = false;
    this.points = [];
    this.cursor = null;
    this.svg.classList.remove("drawing");
    this.redraw();
  }

  finish(): void {
    if (!this.drawing) return;
    // A double-click adds the same point twice: drop repeats.
    const polygon = this.points.filter((p, i, all) => i === 0 || Math.hypot(p[0] - all[i - 1][0], p[1] - all[i - 1][1]) > 0.5);
    this.cancel();
    // A click just beside the image lands on its edge: the image spans -0.5 .. size - 0.5.
    const [columns, rows] = this.size();
    const clamp = (v: number, size: number): number => Math.round(Math.max(-0.5, Math.min(size - 0.5, v)) * 10) / 10;
    if (polygon.length >= 3) this.onFinish(polygon.map(([c, r]) => [clamp(c, columns), clamp(r, rows)]));
  }

  /** The stored region to show (null = none). */
  show(polygon: Point[] | null): void {
    this.saved = polygon;
    this.redraw();
  }

  private toImage(e: MouseEvent): Point | null {
    const imageId = this.viewport.getCurrentImageId();
    if (!imageId) return null;
    const rect = this.svg.getBoundingClientRect();
    const world = this.viewport.canvasToWorld([e.clientX - rect.left, e.clientY - rect.top]);
    const image = utilities.worldToImageCoords(imageId, world);
    return image ? [image[0], image[1]] : null;
  }

  private toCanvas(p: Point): Point | null {
    const imageId = this.viewport.getCurrentImageId();
    if (!imageId) return null;
    const world = utilities.imageToWorldCoords(imageId, p);
    if (!world) return null;
    const c = this.viewport.worldToCanvas(world);
    return [c[0], c[1]];
  }

  private click(e: MouseEvent): void {
    if (!this.drawing) return;
    const p = this.toImage(e);
    if (p) this.points.push(p);
    this.redraw();
  }

  redraw(): void {
    this.svg.replaceChildren();
    const draw = (points: Point[], closed: boolean, cls: string): void => {
      const canvas = points.map((p) => this.toCanvas(p)).filter((p): p is Point => p !== null);
      if (canvas.length === 0) return;
      const el = document.createElementNS(SVG, closed ? "polygon" : "polyline");
      el.setAttribute("points", canvas.map(([x, y]) => `${x.toFixed(1)},${y.toFixed(1)}`).join(" "));
      el.setAttribute("class", cls);
      this.svg.append(el);
    };
    if (this.saved && !this.drawing) draw(this.saved, true, "roi-saved");
    if (this.drawing) draw(this.cursor ? [...this.points, this.cursor] : this.points, false, "roi-drawing");
  }
}
