// The annotate page (and, with data-mode="adjudicate", the adjudication page): a Cornerstone3D
// stack of the assigned series with one labelmap layer per campaign type (common/segmentation),
// brush and eraser (Cornerstone3D's BrushTool), polygon and threshold-assisted fill (ours, in
// ./masks), undo/redo, slice labels, keyboard shortcuts and autosave of versioned readings.

import {
  Enums,
  RenderingEngine,
  getRenderingEngine,
  init as coreInit,
  setUseCPURendering,
  utilities,
  type Types,
} from "@cornerstonejs/core";
import dicomImageLoader, { init as dicomImageLoaderInit } from "@cornerstonejs/dicom-image-loader";
import {
  Enums as ToolEnums,
  PanTool,
  StackScrollTool,
  ToolGroupManager,
  WindowLevelTool,
  ZoomTool,
  addTool,
  init as toolsInit,
  utilities as toolUtilities,
} from "@cornerstonejs/tools";

import { getJson } from "../api/client";
import { frameImageId, seriesMetadata, value, type DicomJson } from "../api/dicomweb";
import { ARTIFACT_RGB, artifactColour, artifactLabel, type ArtifactType } from "../common/artifacts";
import {
  editModeSet,
  editToolsAdd,
  layerCreate,
  layerGetSlice,
  layerSetSlice,
  maskArea,
  type LabelmapLayer,
} from "../common/segmentation";
import { History, fillPolygon, floodFill, rleDecode, rleEncode } from "./masks";

type Tool = "brush" | "eraser" | "polygon" | "fill" | "hint" | "wl";
type Masks = Record<string, number[]>;

interface InstanceRow {
  id: string;
  sop_uid: string;
  instance_number: number | null;
  rows: number;
  columns: number;
  annotated: boolean;
}

interface AssignmentDetail {
  id: string;
  campaign: string;
  status: string;
  artifact_types: string[];
  blinded: boolean;
  own: boolean;
  resume_instance_id: string | null;
  progress: { finished: number; total: number };
  instances: InstanceRow[];
}

interface Reading {
  id?: number;
  reader?: string;
  version: number;
  masks: Masks;
  types_present: string[];
  diagnostic: boolean | null;
  confidence: number | null;
  source?: string;
  versions?: { version: number; source: string; created_at: string }[];
}

interface SliceReadings {
  instance_id: string;
  sop_uid: string;
  rows: number;
  columns: number;
  artifact_types: string[];
  reasons: string[];
  readings: Reading[];
  adjudication: (Reading & { method: string; adjudicator: string }) | null;
}

const ENGINE_ID = "artiscan-annotate";
const VIEWPORT_ID = "annotate";
const TOOL_GROUP_ID = "annotate";
const AUTOSAVE_MS = 1200;

const $ = <T extends Element>(selector: string): T | null => document.querySelector<T>(selector);
const root = $<HTMLElement>("#annotate");
const element = $<HTMLDivElement>("#viewport");
const hintCanvas = $<HTMLCanvasElement>("#hint-layer");
const csrf = document.querySelector<HTMLInputElement>("input[name=csrfmiddlewaretoken]")?.value ?? "";

function say(text: string, state = "ready"): void {
  const status = $<HTMLElement>("#ann-status");
  if (status) status.textContent = text;
  if (root) root.dataset.state = state;
}

async function send<T>(url: string, body: unknown): Promise<T> {
  const response = await fetch(url, {
    method: "POST",
    credentials: "same-origin",
    headers: { "Content-Type": "application/json", Accept: "application/json", "X-CSRFToken": csrf },
    body: JSON.stringify(body),
  });
  if (!response.ok) {
    let detail = `HTTP ${response.status}`;
    try {
      detail = JSON.stringify(await response.json());
    } catch {
      // not JSON
    }
    throw new Error(detail);
  }
  return (await response.json()) as T;
}

function hasWebGL(): boolean {
  try {
    const canvas = document.createElement("canvas");
    return !!(canvas.getContext("webgl2") ?? canvas.getContext("webgl"));
  } catch {
    return false;
  }
}

async function start(): Promise<void> {
  if (!root || !element) return;
  const mode = root.dataset.mode === "adjudicate" ? "adjudicate" : "annotate";
  const campaignId = root.dataset.campaignId ?? "";
  const assignmentId = root.dataset.assignmentId ?? "";
  const studyUid = root.dataset.study ?? "";
  const seriesUid = root.dataset.series ?? "";

  let detail: AssignmentDetail | null = null;
  let slice: SliceReadings | null = null;
  let types: string[];
  try {
    if (mode === "annotate") {
      detail = await getJson<AssignmentDetail>(`/api/assignments/${assignmentId}/`);
      types = detail.artifact_types;
    } else {
      slice = await getJson<SliceReadings>(`/api/campaigns/${campaignId}/instances/${root.dataset.instanceId}/readings/`);
      types = slice.artifact_types;
    }
  } catch (error) {
    say(`Could not load the assignment: ${(error as Error).message}`, "error");
    return;
  }
  let items: DicomJson[];
  try {
    items = await seriesMetadata(studyUid, seriesUid);
  } catch (error) {
    say(`Could not load the series: ${(error as Error).message}`, "error");
    return;
  }

  await coreInit();
  if (!hasWebGL()) setUseCPURendering(true);
  dicomImageLoaderInit({ maxWebWorkers: Math.max(1, Math.min(4, navigator.hardwareConcurrency - 1)) });
  toolsInit();

  const imageIds = items.map((item) => {
    const imageId = frameImageId(studyUid, seriesUid, item);
    dicomImageLoader.wadors.metaDataManager.add(imageId, item as never);
    return imageId;
  });
  const sops = items.map((item) => value<string>(item, "00080018") ?? "");
  const rowsOf = (i: number): number => Number(value(items[i], "00280010") ?? 0);
  const colsOf = (i: number): number => Number(value(items[i], "00280011") ?? 0);
  const instanceBySop = new Map((detail?.instances ?? []).map((i) => [i.sop_uid, i]));

  const engine = getRenderingEngine(ENGINE_ID) ?? new RenderingEngine(ENGINE_ID);
  engine.enableElement({ viewportId: VIEWPORT_ID, type: Enums.ViewportType.STACK, element });
  const viewport = engine.getViewport(VIEWPORT_ID) as Types.IStackViewport;
  for (const tool of [WindowLevelTool, PanTool, ZoomTool, StackScrollTool]) addTool(tool);
  const group = ToolGroupManager.getToolGroup(TOOL_GROUP_ID) ?? ToolGroupManager.createToolGroup(TOOL_GROUP_ID);
  if (!group) throw new Error("no tool group");
  for (const tool of [WindowLevelTool, PanTool, ZoomTool, StackScrollTool]) group.addTool(tool.toolName);
  group.setToolActive(PanTool.toolName, { bindings: [{ mouseButton: ToolEnums.MouseBindings.Auxiliary }] });
  group.setToolActive(ZoomTool.toolName, { bindings: [{ mouseButton: ToolEnums.MouseBindings.Secondary }] });
  if (mode === "annotate") {
    group.setToolActive(StackScrollTool.toolName, { bindings: [{ mouseButton: ToolEnums.MouseBindings.Wheel }] });
  }
  editToolsAdd(group);
  group.addViewport(VIEWPORT_ID, ENGINE_ID);

  let startAt = 0;
  if (detail) {
    const resume = detail.instances.find((i) => i.id === detail?.resume_instance_id);
    const firstOpen = detail.instances.find((i) => !i.annotated);
    const target = resume ?? firstOpen;
    if (target) startAt = Math.max(0, sops.indexOf(target.sop_uid));
  } else if (slice) {
    startAt = Math.max(0, sops.indexOf(slice.sop_uid));
  }
  await viewport.setStack(imageIds, startAt);
  viewport.render();

  const layers = new Map<string, LabelmapLayer>();
  for (const type of types) {
    layers.set(type, await layerCreate({
      viewportId: VIEWPORT_ID,
      layerId: `annotate-${type}`,
      imageIds,
      segments: [{ index: 1, label: artifactLabel(type), rgb: ARTIFACT_RGB[type as ArtifactType] ?? [128, 128, 128] }],
    }));
  }

  // --- state ---------------------------------------------------------------------------------
  let activeType = types[0];
  let tool: Tool = "brush";
  let brushSize = Number($<HTMLInputElement>("#brush-size")?.value ?? 14);
  const history = new History();
  const loaded = new Set<number>(); // positions whose saved reading is in the layers
  const dirty = new Set<number>();
  const source = new Map<number, string>();
  const labels = new Map<number, { diagnostic: boolean | null; confidence: number | null; present: Set<string> }>();
  const spent = new Map<number, number>();
  let shownSince = performance.now();
  let polygon: [number, number][] = [];
  let hints: [number, number][] = [];
  let saveTimer: number | undefined;
  let savedVersions = 0;
  const current = (): number => viewport.getCurrentImageIdIndex();
  const render = (): void => viewport.render();
  const size = (p: number): number => rowsOf(p) * colsOf(p);

  const labelsOf = (p: number): { diagnostic: boolean | null; confidence: number | null; present: Set<string> } => {
    let entry = labels.get(p);
    if (!entry) {
      entry = { diagnostic: null, confidence: null, present: new Set() };
      labels.set(p, entry);
    }
    return entry;
  };

  const setMasks = (p: number, masks: Masks, onlyGiven = false): void => {
    for (const type of types) {
      const layer = layers.get(type);
      if (!layer) continue;
      if (onlyGiven && !(type in masks)) continue;
      const mask = masks[type] ? rleDecode(masks[type], size(p)) : new Uint8Array(size(p));
      layerSetSlice(layer, p, mask);
    }
    render();
  };

  /** The slice's non-empty masks, by type, as run lengths. */
  const layerMasks = (p: number): Masks => {
    const masks: Masks = {};
    for (const type of types) {
      const layer = layers.get(type);
      if (!layer) continue;
      const mask = layerGetSlice(layer, p);
      if (maskArea(mask)) masks[type] = rleEncode(mask);
    }
    return masks;
  };

  // --- side panel ----------------------------------------------------------------------------
  const typesPanel = $<HTMLElement>("#types");
  const presentPanel = $<HTMLElement>("#present");
  const renderTypes = (): void => {
    if (typesPanel) {
      typesPanel.replaceChildren(...types.map((type, k) => {
        const button = document.createElement("button");
        button.type = "button";
        button.className = "ann-type";
        button.dataset.type = type;
        button.setAttribute("aria-pressed", String(type === activeType));
        const swatch = document.createElement("span");
        swatch.className = "ann-swatch";
        swatch.style.background = artifactColour(type);
        button.append(swatch, `${(k + 1) % 10} ${artifactLabel(type)}`);
        button.addEventListener("click", () => selectType(type));
        return button;
      }));
    }
    if (presentPanel) {
      const entry = labelsOf(current());
      presentPanel.replaceChildren(...types.map((type) => {
        const label = document.createElement("label");
        const box = document.createElement("input");
        box.type = "checkbox";
        box.dataset.type = type;
        box.checked = entry.present.has(type);
        box.addEventListener("change", () => {
          if (box.checked) entry.present.add(type);
          else entry.present.delete(type);
          markDirty(current());
        });
        label.append(box, ` ${artifactLabel(type)} present`);
        return label;
      }));
    }
    const entry = labelsOf(current());
    for (const radio of document.querySelectorAll<HTMLInputElement>("input[name=diagnostic]")) {
      radio.checked = entry.diagnostic !== null && (radio.value === "yes") === entry.diagnostic;
    }
    const confidence = $<HTMLSelectElement>("#confidence");
    if (confidence) confidence.value = entry.confidence === null ? "" : String(entry.confidence);
  };

  const selectType = (type: string): void => {
    activeType = type;
    root.dataset.activeType = type;
    applyTool();
    renderTypes();
  };

  // The slider is in screen pixels; Cornerstone's brush size is in world units (mm), so it is
  // converted at the current zoom (and again whenever the camera changes).
  const brushWorld = (): number => {
    const a = viewport.canvasToWorld([0, 0]);
    const b = viewport.canvasToWorld([brushSize, 0]);
    return Math.max(0.01, Math.hypot(b[0] - a[0], b[1] - a[1], b[2] - a[2]));
  };
  const applyTool = (): void => {
    const layer = layers.get(activeType) ?? null;
    if (tool === "brush" || tool === "eraser") {
      editModeSet(group, layer, tool, { fallbackTool: WindowLevelTool.toolName, size: brushWorld() });
    } else {
      editModeSet(group, null, null, { fallbackTool: WindowLevelTool.toolName });
    }
    for (const b of document.querySelectorAll<HTMLElement>("[data-tool]")) {
      b.setAttribute("aria-pressed", String(b.dataset.tool === tool));
    }
    root.dataset.tool = tool;
    drawHints();
  };

  const selectTool = (next: Tool): void => {
    if (next === "hint" && detail?.blinded) return;
    tool = next;
    polygon = [];
    applyTool();
  };

  // --- coordinates and the hint layer --------------------------------------------------------
  const toImage = (event: MouseEvent): [number, number] => {
    const rect = element.getBoundingClientRect();
    const world = viewport.canvasToWorld([event.clientX - rect.left, event.clientY - rect.top]);
    const [col, row] = utilities.worldToImageCoords(imageIds[current()], world) as [number, number];
    return [col, row];
  };
  const toCanvas = (col: number, row: number): [number, number] => {
    const world = utilities.imageToWorldCoords(imageIds[current()], [col, row]);
    if (!world) return [0, 0];
    const [x, y] = viewport.worldToCanvas(world);
    return [x, y];
  };
  function drawHints(): void {
    if (!hintCanvas) return;
    const rect = element!.getBoundingClientRect();
    hintCanvas.width = rect.width;
    hintCanvas.height = rect.height;
    const ctx = hintCanvas.getContext("2d");
    if (!ctx) return;
    ctx.clearRect(0, 0, rect.width, rect.height);
    // Where the image lies on the canvas (CSS pixels), for tests and tools that aim at pixels.
    const [x0, y0] = toCanvas(0, 0);
    const [x1, y1] = toCanvas(colsOf(current()), rowsOf(current()));
    root!.dataset.imageRect = [x0, y0, x1, y1].map((v) => v.toFixed(1)).join(",");
    if (polygon.length) {
      ctx.strokeStyle = artifactColour(activeType);
      ctx.lineWidth = 2;
      ctx.beginPath();
      polygon.forEach(([c, r], k) => {
        const [x, y] = toCanvas(c, r);
        if (k === 0) ctx.moveTo(x, y);
        else ctx.lineTo(x, y);
      });
      ctx.stroke();
    }
    ctx.fillStyle = "#ffeb3b";
    for (const [r, c] of hints) {
      const [x, y] = toCanvas(c + 0.5, r + 0.5);
      ctx.beginPath();
      ctx.arc(x, y, 5, 0, 2 * Math.PI);
      ctx.fill();
    }
  }

  // --- edits, undo/redo ----------------------------------------------------------------------
  const edit = (type: string, change: (mask: Uint8Array, p: number) => void): void => {
    const layer = layers.get(type);
    if (!layer) return;
    const p = current();
    const before = layerGetSlice(layer, p);
    const after = before.slice();
    change(after, p);
    history.push({ position: p, type, before, after });
    layerSetSlice(layer, p, after);
    markDirty(p);
    render();
  };

  let strokeBefore: { type: string; position: number; mask: Uint8Array } | null = null;
  const wrapper = element.parentElement ?? element;
  wrapper.addEventListener("mousedown", (event) => {
    if (event.button !== 0) return;
    if (tool === "brush" || tool === "eraser") {
      const layer = layers.get(activeType);
      if (layer) strokeBefore = { type: activeType, position: current(), mask: layerGetSlice(layer, current()) };
      return;
    }
    if (tool === "wl") return;
    // Our own tools: keep the click from Cornerstone's tools.
    event.stopPropagation();
    event.preventDefault();
    const [col, row] = toImage(event);
    const p = current();
    if (tool === "polygon") {
      polygon.push([col, row]);
      if (event.detail >= 2) closePolygon();
      drawHints();
    } else if (tool === "fill") {
      const image = viewport.getCornerstoneImage() as unknown as {
        getPixelData?: () => ArrayLike<number>;
        voxelManager?: { getScalarData: () => ArrayLike<number> };
      };
      const pixels = image.getPixelData?.() ?? image.voxelManager?.getScalarData();
      if (!pixels) return;
      const { lower, upper } = viewport.getProperties().voiRange ?? { lower: 0, upper: 1 };
      const tolerance = ((upper - lower) * Number($<HTMLInputElement>("#fill-tolerance")?.value ?? 15)) / 100;
      edit(activeType, (mask) => floodFill(mask, pixels, colsOf(p), rowsOf(p), Math.floor(col), Math.floor(row), tolerance));
    } else if (tool === "hint") {
      hints.push([Math.floor(row), Math.floor(col)]);
      drawHints();
      root.dataset.hints = String(hints.length);
    }
  }, true);
  window.addEventListener("mouseup", () => {
    if (!strokeBefore) return;
    const { type, position, mask } = strokeBefore;
    strokeBefore = null;
    const layer = layers.get(type);
    if (!layer) return;
    const after = layerGetSlice(layer, position);
    const before = history.sizes[0];
    history.push({ position, type, before: mask, after });
    if (history.sizes[0] !== before) markDirty(position);
  });
  const closePolygon = (): void => {
    const points = polygon;
    polygon = [];
    const p = current();
    if (points.length >= 3) edit(activeType, (mask) => fillPolygon(mask, colsOf(p), rowsOf(p), points));
    drawHints();
  };
  const undoRedo = (redo: boolean): void => {
    const step = redo ? history.redo() : history.undo();
    if (!step) return;
    const layer = layers.get(step.type);
    if (!layer) return;
    if (step.position !== current()) void viewport.setImageIdIndex(step.position);
    layerSetSlice(layer, step.position, redo ? step.after : step.before);
    markDirty(step.position);
    render();
  };

  // --- loading and saving --------------------------------------------------------------------
  const readingUrl = (p: number): string | null => {
    const instance = instanceBySop.get(sops[p]);
    return instance ? `/api/assignments/${assignmentId}/instances/${instance.id}/annotation/` : null;
  };
  const renderProgress = (): void => {
    const el = $<HTMLElement>("#ann-progress");
    if (!el || !detail) return;
    const annotated = detail.instances.filter((i) => i.annotated).length;
    el.textContent = `${detail.progress.finished} of ${detail.progress.total} series · slice ${current() + 1}/${imageIds.length} · ${annotated} of ${detail.instances.length} slices read`;
    const label = $<HTMLElement>("#slice-label");
    if (label) label.textContent = `${current() + 1} / ${imageIds.length}`;
  };

  const loadReading = async (p: number): Promise<void> => {
    if (loaded.has(p)) return;
    const url = readingUrl(p);
    if (!url) return;
    const reading = await getJson<Reading>(url);
    if (loaded.has(p)) return;
    loaded.add(p);
    setMasks(p, reading.masks);
    labels.set(p, {
      diagnostic: reading.diagnostic,
      confidence: reading.confidence,
      present: new Set(reading.types_present),
    });
    source.set(p, reading.version ? "previous" : "empty");
    const versions = $<HTMLElement>("#versions");
    if (versions) {
      versions.textContent = reading.versions?.length
        ? `Saved versions: ${reading.versions.map((v) => `v${v.version} (${v.source})`).join(", ")}`
        : "Not saved yet.";
    }
    if (p === current()) renderTypes();
  };

  const save = async (p: number): Promise<void> => {
    const url = readingUrl(p);
    if (!url || !detail?.own || !dirty.has(p)) return;
    dirty.delete(p);
    const masks = layerMasks(p);
    const entry = labelsOf(p);
    const now = performance.now();
    const time = (spent.get(p) ?? 0) + (p === current() ? now - shownSince : 0);
    if (p === current()) shownSince = now;
    spent.set(p, 0);
    const state = $<HTMLElement>("#ann-save");
    if (state) {
      state.textContent = "saving…";
      state.dataset.state = "saving";
    }
    try {
      const saved = await send<{ version: number; status: string; mask_pixels: Record<string, number> }>(url, {
        masks,
        types_present: [...entry.present],
        diagnostic: entry.diagnostic,
        confidence: entry.confidence,
        source: source.get(p) ?? "empty",
        time_spent_ms: Math.round(time),
      });
      for (const type of Object.keys(saved.mask_pixels)) entry.present.add(type);
      source.set(p, "previous");
      savedVersions++;
      root.dataset.saved = String(savedVersions);
      const instance = instanceBySop.get(sops[p]);
      if (instance) instance.annotated = true;
      if (detail && saved.status === "done" && detail.status !== "done") {
        detail.status = "done";
        detail.progress.finished++;
      }
      if (state) {
        state.textContent = `saved v${saved.version}`;
        state.dataset.state = "saved";
      }
      renderProgress();
      if (p === current()) renderTypes();
    } catch (error) {
      dirty.add(p);
      if (state) {
        state.textContent = `not saved: ${(error as Error).message}`;
        state.dataset.state = "error";
      }
    }
  };

  function markDirty(p: number): void {
    if (mode !== "annotate") return;
    dirty.add(p);
    const state = $<HTMLElement>("#ann-save");
    if (state) {
      state.textContent = "unsaved changes";
      state.dataset.state = "dirty";
    }
    window.clearTimeout(saveTimer);
    saveTimer = window.setTimeout(() => void save(p), AUTOSAVE_MS);
  }

  // --- slices --------------------------------------------------------------------------------
  let previous = current();
  element.addEventListener(Enums.Events.STACK_NEW_IMAGE, () => {
    const now = performance.now();
    spent.set(previous, (spent.get(previous) ?? 0) + now - shownSince);
    shownSince = now;
    if (dirty.has(previous)) {
      window.clearTimeout(saveTimer);
      void save(previous);
    }
    previous = current();
    polygon = [];
    hints = [];
    root.dataset.slice = String(current());
    void loadReading(current());
    renderTypes();
    renderProgress();
    drawHints();
  });
  element.addEventListener(Enums.Events.CAMERA_MODIFIED, () => {
    drawHints();
    if (tool === "brush" || tool === "eraser") {
      toolUtilities.segmentation.setBrushSizeForToolGroup(group.id, brushWorld());
    }
  });
  const go = (delta: number): void => {
    const next = Math.min(imageIds.length - 1, Math.max(0, current() + delta));
    void viewport.setImageIdIndex(next);
  };
  const nextUnread = (): void => {
    if (!detail) return;
    for (let k = 1; k <= imageIds.length; k++) {
      const p = (current() + k) % imageIds.length;
      if (!instanceBySop.get(sops[p])?.annotated) {
        void viewport.setImageIdIndex(p);
        return;
      }
    }
  };

  // --- model masks and AI assist -------------------------------------------------------------
  const note = (text: string): void => {
    const el = $<HTMLElement>("#model-note");
    if (el) el.textContent = text;
  };
  const acceptModel = async (): Promise<void> => {
    const instance = instanceBySop.get(sops[current()]);
    if (!instance || detail?.blinded) return;
    const p = current();
    try {
      const { masks } = await getJson<{ masks: Masks }>(`/api/assignments/${assignmentId}/instances/${instance.id}/model-masks/`);
      for (const type of types) edit(type, (mask) => mask.set(masks[type] ? rleDecode(masks[type], size(p)) : new Uint8Array(size(p))));
      source.set(p, "model");
      note(Object.keys(masks).length ? `Model masks: ${Object.keys(masks).map(artifactLabel).join(", ")}` : "The model found nothing here.");
    } catch (error) {
      note(`No model masks: ${(error as Error).message}`);
    }
  };
  const assist = async (): Promise<void> => {
    const instance = instanceBySop.get(sops[current()]);
    if (!instance || detail?.blinded) return;
    const p = current();
    note("Re-running the model on this slice…");
    try {
      const { masks } = await send<{ masks: Masks }>(`/api/assignments/${assignmentId}/instances/${instance.id}/assist/`, { hints });
      const given = Object.keys(masks);
      for (const type of given) edit(type, (mask) => mask.set(rleDecode(masks[type], size(p))));
      source.set(p, "assist");
      note(given.length ? `Model (${hints.length} hints): ${given.map(artifactLabel).join(", ")}` : "The model found nothing near the hints.");
      hints = [];
      drawHints();
    } catch (error) {
      note(`The model could not run: ${(error as Error).message}`);
    }
  };

  // --- wiring --------------------------------------------------------------------------------
  for (const b of document.querySelectorAll<HTMLElement>("[data-tool]")) {
    b.addEventListener("click", () => selectTool(b.dataset.tool as Tool));
  }
  $("#undo")?.addEventListener("click", () => undoRedo(false));
  $("#redo")?.addEventListener("click", () => undoRedo(true));
  $<HTMLInputElement>("#brush-size")?.addEventListener("input", (event) => {
    brushSize = Number((event.target as HTMLInputElement).value);
    applyTool();
  });
  for (const radio of document.querySelectorAll<HTMLInputElement>("input[name=diagnostic]")) {
    radio.addEventListener("change", () => {
      labelsOf(current()).diagnostic = radio.value === "yes";
      markDirty(current());
    });
  }
  $<HTMLSelectElement>("#confidence")?.addEventListener("change", (event) => {
    const v = (event.target as HTMLSelectElement).value;
    labelsOf(current()).confidence = v ? Number(v) : null;
    markDirty(current());
  });
  const modelButtons = [$<HTMLButtonElement>("#accept-model"), $<HTMLButtonElement>("#assist"), $<HTMLButtonElement>("[data-tool=hint]")];
  if (detail?.blinded) {
    for (const b of modelButtons) if (b) b.disabled = true;
    note("Blinded campaign: the model's masks are hidden.");
  }
  $("#accept-model")?.addEventListener("click", () => void acceptModel());
  $("#assist")?.addEventListener("click", () => void assist());
  $("#finish")?.addEventListener("click", async () => {
    for (const p of [...dirty]) await save(p);
    await send(`/api/assignments/${assignmentId}/finish/`, {});
    window.location.href = "/annotate/";
  });
  $("#skip")?.addEventListener("click", async () => {
    const reason = window.prompt("Why skip this series?");
    if (!reason) return;
    await send(`/api/assignments/${assignmentId}/skip/`, { reason });
    window.location.href = "/annotate/";
  });
  window.addEventListener("beforeunload", () => {
    for (const p of dirty) void save(p);
  });

  window.addEventListener("keydown", (event) => {
    if (event.target instanceof HTMLInputElement || event.target instanceof HTMLSelectElement || event.target instanceof HTMLTextAreaElement) return;
    const key = event.key;
    if ((event.ctrlKey || event.metaKey) && (key === "z" || key === "Z")) {
      event.preventDefault();
      undoRedo(event.shiftKey);
    } else if ((event.ctrlKey || event.metaKey) && key === "y") {
      event.preventDefault();
      undoRedo(true);
    } else if (event.ctrlKey || event.metaKey || event.altKey) {
      return;
    } else if (/^[0-9]$/.test(key)) {
      const type = types[(Number(key) + 9) % 10];
      if (type) selectType(type);
    } else if (key === "b") selectTool("brush");
    else if (key === "e") selectTool("eraser");
    else if (key === "p") selectTool("polygon");
    else if (key === "f") selectTool("fill");
    else if (key === "h") selectTool("hint");
    else if (key === "w") selectTool("wl");
    else if (key === "Enter" && tool === "polygon") closePolygon();
    else if (key === "Escape") {
      polygon = [];
      hints = [];
      drawHints();
    } else if (key === "[" || key === "]") {
      brushSize = Math.max(2, Math.min(60, brushSize + (key === "]" ? 2 : -2)));
      const slider = $<HTMLInputElement>("#brush-size");
      if (slider) slider.value = String(brushSize);
      applyTool();
    } else if (mode === "annotate" && (key === "j" || key === "ArrowDown")) go(1);
    else if (mode === "annotate" && (key === "k" || key === "ArrowUp")) go(-1);
    else if (key === "d") {
      const entry = labelsOf(current());
      entry.diagnostic = entry.diagnostic === false;
      renderTypes();
      markDirty(current());
    } else if (key === "m") void acceptModel();
    else if (key === "a") void assist();
    else if (key === "s") {
      window.clearTimeout(saveTimer);
      void save(current());
    } else if (key === "n") nextUnread();
    else return;
    event.preventDefault();
  });
  window.addEventListener("resize", () => {
    engine.resize(true, true);
    drawHints();
  });

  selectType(activeType);
  selectTool("brush");
  root.dataset.slice = String(current());
  if (mode === "annotate") {
    await loadReading(current());
    renderProgress();
    say(`${detail?.campaign ?? ""}: ${imageIds.length} images`, "ready");
  } else if (slice) {
    await adjudicate(slice);
  }

  // --- adjudication ----------------------------------------------------------------------------
  async function adjudicate(data: SliceReadings): Promise<void> {
    const p = current();
    const readers = $<HTMLElement>("#readers");
    const reasons = $<HTMLElement>("#reasons");
    if (reasons) reasons.textContent = data.reasons.length ? `Disagree on: ${data.reasons.map(artifactLabel).join(", ")}` : "The readers agree.";
    const image = viewport.getCornerstoneImage() as unknown as {
      getPixelData?: () => ArrayLike<number>;
      voxelManager?: { getScalarData: () => ArrayLike<number> };
    };
    const pixels = image.getPixelData?.() ?? image.voxelManager?.getScalarData() ?? new Uint8Array(size(p));
    const { lower, upper } = viewport.getProperties().voiRange ?? { lower: 0, upper: 1 };
    const width = colsOf(p);
    const height = rowsOf(p);
    const figure = (title: string, masks: Masks[], reader: string): HTMLElement => {
      const fig = document.createElement("figure");
      fig.dataset.reader = reader;
      const canvas = document.createElement("canvas");
      canvas.width = width;
      canvas.height = height;
      const ctx = canvas.getContext("2d");
      let marked = 0;
      if (ctx) {
        const rgba = new Uint8ClampedArray(width * height * 4);
        for (let i = 0; i < width * height; i++) {
          const g = Math.max(0, Math.min(255, ((pixels[i] - lower) / Math.max(upper - lower, 1)) * 255));
          rgba[i * 4] = rgba[i * 4 + 1] = rgba[i * 4 + 2] = g;
          rgba[i * 4 + 3] = 255;
        }
        for (const set of masks) {
          for (const [type, runs] of Object.entries(set)) {
            const mask = rleDecode(runs, width * height);
            const [r, g, b] = ARTIFACT_RGB[type as ArtifactType] ?? [255, 255, 255];
            for (let i = 0; i < mask.length; i++) {
              if (!mask[i]) continue;
              marked++;
              rgba[i * 4] = (rgba[i * 4] + r) / 2;
              rgba[i * 4 + 1] = (rgba[i * 4 + 1] + g) / 2;
              rgba[i * 4 + 2] = (rgba[i * 4 + 2] + b) / 2;
            }
          }
        }
        ctx.putImageData(new ImageData(rgba, width, height), 0, 0);
      }
      fig.dataset.pixels = String(marked);
      const caption = document.createElement("figcaption");
      caption.textContent = title;
      fig.append(canvas, caption);
      return fig;
    };
    const describe = (r: Reading): string => {
      const diag = r.diagnostic === null ? "no label" : r.diagnostic ? "diagnostic" : "not diagnostic";
      const px = Object.entries(r.masks).map(([t, runs]) => `${artifactLabel(t)} ${maskArea(rleDecode(runs, width * height))} px`).join(", ");
      return `${r.reader} v${r.version}: ${diag}; ${px || "no mask"}`;
    };
    if (readers) {
      readers.replaceChildren(
        ...data.readings.map((r) => figure(describe(r), [r.masks], r.reader ?? "")),
        figure("All readers over each other", data.readings.map((r) => r.masks), "all"),
      );
    }
    const pick = $<HTMLElement>("#pick");
    if (pick) {
      pick.replaceChildren(...data.readings.map((r) => {
        const button = document.createElement("button");
        button.type = "button";
        button.dataset.pick = r.reader ?? "";
        button.textContent = `Pick ${r.reader}`;
        button.addEventListener("click", () => void decide({ method: "pick", annotation_id: r.id }));
        return button;
      }));
    }
    const show = (d: SliceReadings): void => {
      const adj = d.adjudication;
      const text = $<HTMLElement>("#adjudication");
      if (adj) {
        setMasks(p, adj.masks);
        if (text) text.textContent = `Adjudicated v${adj.version} (${adj.method}) by ${adj.adjudicator}`;
        root!.dataset.adjudicated = String(adj.version);
      } else {
        // Start the redraw from the readers' union, each type on its layer.
        const union: Masks = {};
        for (const type of types) {
          const acc = new Uint8Array(size(p));
          for (const r of d.readings) if (r.masks[type]) rleDecode(r.masks[type], size(p)).forEach((v, i) => (acc[i] ||= v));
          if (maskArea(acc)) union[type] = rleEncode(acc);
        }
        setMasks(p, union);
        if (text) text.textContent = "Not adjudicated yet: the overlay shows the readers' union.";
      }
    };
    show(data);
    const decide = async (body: Record<string, unknown>): Promise<void> => {
      const entry = labelsOf(p);
      try {
        await send(`/api/campaigns/${campaignId}/adjudications/`, {
          instance_id: data.instance_id,
          diagnostic: entry.diagnostic,
          ...body,
        });
        const fresh = await getJson<SliceReadings>(`/api/campaigns/${campaignId}/instances/${data.instance_id}/readings/`);
        show(fresh);
      } catch (error) {
        const text = $<HTMLElement>("#adjudication");
        if (text) text.textContent = `Not saved: ${(error as Error).message}`;
      }
    };
    $("#majority")?.addEventListener("click", () => void decide({ method: "majority" }));
    $("#staple")?.addEventListener("click", () => void decide({ method: "staple" }));
    $("#redraw")?.addEventListener("click", () => void decide({ method: "redraw", masks: layerMasks(p) }));
    say(`Adjudicating slice ${p + 1}: ${data.readings.length} readings`, "ready");
  }
}

void start().catch((error: unknown) => say(`The page failed: ${(error as Error)?.message ?? String(error)}`, "error"));
