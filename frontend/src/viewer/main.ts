// Series viewer: Cornerstone3D's own sequence (init → rendering engine → viewport → stack →
// render) on our DICOMweb; scroll (wheel, keys, slider), window/level (drag, presets), zoom, pan,
// reset, cine, and the slice's acquisition values.

import {
  Enums,
  RenderingEngine,
  getRenderingEngine,
  init as coreInit,
  setUseCPURendering,
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
} from "@cornerstonejs/tools";

import { frameImageId, seriesMetadata, value, type DicomJson } from "../api/dicomweb";
import { renderHeaders } from "./headers";
import { renderFindings, renderStrip, seriesResult, type SeriesResult } from "./results";
import { connectEvents } from "../realtime/events";

const ENGINE_ID = "artiscan";
const VIEWPORT_ID = "series";
const TOOL_GROUP_ID = "viewer";
const PRESETS: Record<string, [number, number] | null> = {
  auto: null,
  brain: [40, 80],
  "T1/T2 soft": [600, 1200],
  wide: [1500, 3000],
};

const root = document.querySelector<HTMLElement>("#viewer");
const element = document.querySelector<HTMLDivElement>("#viewport");
const status = document.querySelector<HTMLElement>("#viewer-status");
const slider = document.querySelector<HTMLInputElement>("#slice");
const sliceLabel = document.querySelector<HTMLElement>("#slice-label");
const headers = document.querySelector<HTMLElement>("#headers");
const presetSelect = document.querySelector<HTMLSelectElement>("#preset");
const strip = document.querySelector<HTMLElement>("#strip");
const findingsPanel = document.querySelector<HTMLElement>("#findings");
const seriesIndex = document.querySelector<HTMLElement>("#series-index");

function hasWebGL(): boolean {
  try {
    const canvas = document.createElement("canvas");
    return !!(canvas.getContext("webgl2") ?? canvas.getContext("webgl"));
  } catch {
    return false;
  }
}

function say(text: string, state: "loading" | "ready" | "error"): void {
  if (status) {
    status.textContent = text;
    status.dataset.state = state;
  }
}

async function start(): Promise<void> {
  if (!root || !element) return;
  const studyUid = root.dataset.study ?? "";
  const seriesUid = root.dataset.series ?? "";
  const t0 = performance.now();
  say("Loading series…", "loading");
  let items: DicomJson[];
  try {
    items = await seriesMetadata(studyUid, seriesUid);
  } catch (error) {
    say(`Could not load the series: ${(error as Error).message}`, "error");
    return;
  }
  if (items.length === 0) {
    say("This series has no images yet.", "error");
    return;
  }

  await coreInit();
  if (!hasWebGL()) setUseCPURendering(true); // headless browsers and old workstations
  dicomImageLoaderInit({ maxWebWorkers: Math.max(1, Math.min(4, navigator.hardwareConcurrency - 1)) });
  toolsInit();

  const imageIds = items.map((item) => {
    const imageId = frameImageId(studyUid, seriesUid, item);
    dicomImageLoader.wadors.metaDataManager.add(imageId, item as never);
    return imageId;
  });

  const engine = getRenderingEngine(ENGINE_ID) ?? new RenderingEngine(ENGINE_ID);
  engine.enableElement({ viewportId: VIEWPORT_ID, type: Enums.ViewportType.STACK, element });
  const viewport = engine.getViewport(VIEWPORT_ID) as Types.IStackViewport;

  for (const tool of [WindowLevelTool, PanTool, ZoomTool, StackScrollTool]) addTool(tool);
  const group = ToolGroupManager.createToolGroup(TOOL_GROUP_ID);
  if (group) {
    for (const tool of [WindowLevelTool, PanTool, ZoomTool, StackScrollTool]) group.addTool(tool.toolName);
    group.setToolActive(WindowLevelTool.toolName, { bindings: [{ mouseButton: ToolEnums.MouseBindings.Primary }] });
    group.setToolActive(PanTool.toolName, { bindings: [{ mouseButton: ToolEnums.MouseBindings.Auxiliary }] });
    group.setToolActive(ZoomTool.toolName, { bindings: [{ mouseButton: ToolEnums.MouseBindings.Secondary }] });
    group.setToolActive(StackScrollTool.toolName, { bindings: [{ mouseButton: ToolEnums.MouseBindings.Wheel }] });
    group.addViewport(VIEWPORT_ID, ENGINE_ID);
  }

  const middle = Math.floor(imageIds.length / 2);
  await viewport.setStack(imageIds, middle);
  viewport.render();
  const firstImageMs = performance.now() - t0;
  root.dataset.firstImageMs = firstImageMs.toFixed(0);
  say(`${items.length} images · first image in ${firstImageMs.toFixed(0)} ms`, "ready");

  const sops = items.map((item) => value<string>(item, "00080018") ?? "");
  let result: SeriesResult | null = null;
  const show = (index: number): void => {
    if (slider) slider.value = String(index);
    if (sliceLabel) sliceLabel.textContent = `${index + 1} / ${imageIds.length}`;
    if (headers) renderHeaders(headers, items[index]);
    if (findingsPanel && result) renderFindings(findingsPanel, result, sops[index]);
    root.dataset.slice = String(index);
  };
  const loadResult = async (): Promise<void> => {
    try {
      result = await seriesResult(root.dataset.seriesId ?? "");
    } catch {
      return; // the image stays usable without results
    }
    if (seriesIndex) {
      seriesIndex.textContent = result.suitability_index === null
        ? "not scored yet"
        : `series index ${result.suitability_index}/100 — ${result.reason}`;
    }
    if (strip) renderStrip(strip, result, sops, (position) => void viewport.setImageIdIndex(position));
    root.dataset.scored = String(result.instances.length);
    show(viewport.getCurrentImageIdIndex());
  };
  void loadResult();
  connectEvents((event) => {
    if (event.kind.endsWith(".scored") && event.data?.series_id === root.dataset.seriesId) void loadResult();
  }, () => undefined);
  if (slider) {
    slider.max = String(imageIds.length - 1);
    slider.addEventListener("input", () => void viewport.setImageIdIndex(Number(slider.value)));
  }
  element.addEventListener(Enums.Events.STACK_NEW_IMAGE, () => show(viewport.getCurrentImageIdIndex()));
  show(middle);

  const go = (delta: number): void => {
    const next = Math.min(imageIds.length - 1, Math.max(0, viewport.getCurrentImageIdIndex() + delta));
    void viewport.setImageIdIndex(next);
  };
  let cine: number | undefined;
  const toggleCine = (): void => {
    if (cine !== undefined) {
      window.clearInterval(cine);
      cine = undefined;
      return;
    }
    cine = window.setInterval(() => {
      const at = viewport.getCurrentImageIdIndex();
      void viewport.setImageIdIndex(at + 1 >= imageIds.length ? 0 : at + 1);
    }, 1000 / 15);
  };
  const reset = (): void => {
    viewport.resetCamera();
    viewport.resetProperties();
    viewport.render();
  };
  const applyPreset = (name: string): void => {
    const preset = PRESETS[name];
    if (preset === null || preset === undefined) {
      viewport.resetProperties();
    } else {
      const [center, width] = preset;
      viewport.setProperties({ voiRange: { lower: center - width / 2, upper: center + width / 2 } });
    }
    viewport.render();
  };
  presetSelect?.addEventListener("change", () => applyPreset(presetSelect.value));
  document.querySelector("#reset")?.addEventListener("click", reset);
  document.querySelector("#cine")?.addEventListener("click", toggleCine);
  window.addEventListener("keydown", (event) => {
    if (event.target instanceof HTMLInputElement || event.target instanceof HTMLSelectElement) return;
    if (event.key === "ArrowDown" || event.key === "ArrowRight" || event.key === "j") go(1);
    else if (event.key === "ArrowUp" || event.key === "ArrowLeft" || event.key === "k") go(-1);
    else if (event.key === "Home") void viewport.setImageIdIndex(0);
    else if (event.key === "End") void viewport.setImageIdIndex(imageIds.length - 1);
    else if (event.key === "r") reset();
    else if (event.key === " ") {
      event.preventDefault();
      toggleCine();
    } else return;
  });
  window.addEventListener("resize", () => engine.resize(true, true));
  // For tests and the benchmark: the number of the instance on screen.
  root.dataset.instanceNumber = String(value<number>(items[middle], "00200013") ?? "");
}

void start();
