// Series viewer: Cornerstone3D's own sequence (init → rendering engine → viewport → stack →
// render) on our DICOMweb; scroll, window/level, zoom, pan, reset, cine; the drill-down from the
// series index to a slice's findings and each artifact type's mask as a labelmap overlay; review
// actions (accept, correct with brush/eraser, reject; series verdict; region of interest).

import {
  Enums,
  RenderingEngine,
  eventTarget,
  getRenderingEngine,
  imageLoader,
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
} from "@cornerstonejs/tools";

import {
  ApiError,
  blobToBase64,
  findingReview,
  roiClear,
  resultKey,
  roiSet,
  seriesResult,
  seriesReview,
  seriesVerdictSet,
  type FindingResult,
  type FindingReview,
  type SeriesResult,
  type SeriesReviewSummary,
} from "../api/client";
import { frameCount, frameImageId, seriesMetadataShared, value, type DicomJson } from "../api/dicomweb";
import { ARTIFACT_RGB, artifactLabel, type ArtifactType } from "../common/artifacts";
import { helpInstall, typing } from "../common/help";
import { maskFetchPng, maskToPngBlob } from "../common/segmentation";
import { coalesce, connectEvents, eventEffect } from "../realtime/events";
import { renderHeaders } from "./headers";
import { MaskOverlay } from "./maskOverlay";
import { OverlayState } from "./overlays";
import { band, markStrip, renderFindings, renderOverlayControls, renderStrip } from "./results";
import { RoiLayer, type Point } from "./roi";

const ENGINE_ID = "artiscan";
const VIEWPORT_ID = "series";
const TOOL_GROUP_ID = "viewer";
const PRESETS: Record<string, [number, number] | null> = {
  auto: null,
  brain: [40, 80],
  "T1/T2 soft": [600, 1200],
  wide: [1500, 3000],
};

const $ = <T extends Element>(selector: string): T | null => document.querySelector<T>(selector);
const root = $<HTMLElement>("#viewer");
const element = $<HTMLDivElement>("#viewport");
const status = $<HTMLElement>("#viewer-status");
const message = $<HTMLElement>("#viewport-message");
const slider = $<HTMLInputElement>("#slice");
const sliceLabel = $<HTMLElement>("#slice-label");
const headers = $<HTMLElement>("#headers");
const presetSelect = $<HTMLSelectElement>("#preset");
const strip = $<HTMLElement>("#strip");
const findingsPanel = $<HTMLElement>("#findings");
const seriesIndex = $<HTMLElement>("#series-index");
const roiIndex = $<HTMLElement>("#roi-index");
const overlaysPanel = $<HTMLElement>("#overlays");
const editBar = $<HTMLElement>("#edit-bar");
const brushSize = $<HTMLInputElement>("#brush-size");
const verdictBadge = $<HTMLElement>("#verdict-badge");
const verdictHistory = $<HTMLElement>("#verdict-history");
const verdictComment = $<HTMLTextAreaElement>("#verdict-comment");
const roiStatus = $<HTMLElement>("#roi-status");

const SHORTCUTS: [string, string][] = [
  ["↑ ↓ j k", "previous / next slice (also the wheel)"],
  ["Home End", "first / last slice"],
  ["Space", "cine on / off"],
  ["w", "next window preset"],
  ["r", "reset zoom, pan and window"],
  ["1 … 9 0", "toggle the n-th artifact overlay"],
  ["o", "all overlays on / off"],
  ["[ ]", "overlays fainter / stronger"],
  ["a c x", "accept / correct / reject the slice's first open finding"],
  ["b e", "brush / eraser while correcting"],
  ["Enter Esc", "save / cancel the correction or region"],
  ["d n", "mark the series diagnostic / non-diagnostic"],
  ["p", "draw the region of interest"],
  ["?", "this help"],
];

let webglKind: "hardware" | "software" | "none" | undefined;

/** "hardware" WebGL, "software" WebGL (SwiftShader, llvmpipe: a CPU emulating a GPU) or none
 * (asked once: every probe creates a WebGL context). */
function webgl(): "hardware" | "software" | "none" {
  webglKind ??= probeWebgl();
  return webglKind;
}

function probeWebgl(): "hardware" | "software" | "none" {
  try {
    const canvas = document.createElement("canvas");
    const gl = (canvas.getContext("webgl2") ?? canvas.getContext("webgl")) as WebGLRenderingContext | null;
    if (!gl) return "none";
    const info = gl.getExtension("WEBGL_debug_renderer_info");
    const renderer = String(info ? gl.getParameter(info.UNMASKED_RENDERER_WEBGL) : gl.getParameter(gl.RENDERER));
    return /swiftshader|llvmpipe|software|basic render/i.test(renderer) ? "software" : "hardware";
  } catch {
    return "none";
  }
}

/** Cornerstone3D's GPU (WebGL) rendering on a real GPU, its CPU rendering where WebGL is
 * missing or emulated on the CPU (SwiftShader, llvmpipe: headless Chromium, virtual desktops),
 * where the CPU path draws a 1920×1080 stack ~10× faster than emulated WebGL. The overlays are
 * ours (./maskOverlay) and work on both. `?rendering=gpu|cpu` overrides, for
 * benchmarks/viewer.py's comparison. */
function useGpu(): boolean {
  const asked = new URLSearchParams(window.location.search).get("rendering");
  if (asked === "gpu" || asked === "cpu") return asked === "gpu";
  return webgl() === "hardware";
}

function say(text: string, state: "loading" | "ready" | "error" | "busy"): void {
  if (status) {
    status.textContent = text;
    status.dataset.state = state;
  }
  if (message) {
    message.hidden = state === "ready" || state === "busy";
    message.textContent = text;
    message.dataset.state = state;
  }
}

function flash(text: string, error = false): void {
  if (!status) return;
  status.textContent = text;
  status.dataset.state = error ? "error" : "ready";
}

async function start(): Promise<void> {
  if (!root || !element) return;
  const studyUid = root.dataset.study ?? "";
  const seriesUid = root.dataset.series ?? "";
  const seriesId = root.dataset.seriesId ?? "";
  const canReview = root.dataset.canReview === "true";
  const help = helpInstall($<HTMLElement>("#help") ?? document.createElement("div"), "Viewer shortcuts", SHORTCUTS);
  $("#help-button")?.addEventListener("click", help.toggle);

  say("Loading series…", "loading");
  // The metadata (asked for by the page itself while this code loaded) and Cornerstone3D's
  // initialisation, side by side.
  const gpu = useGpu();
  const initialised = coreInit();
  let items: DicomJson[];
  try {
    items = await seriesMetadataShared(studyUid, seriesUid);
  } catch (error) {
    say(`Could not load the series: ${(error as Error).message}`, "error");
    return;
  }
  if (items.length === 0) {
    say("This series has no images yet.", "error");
    return;
  }
  if (!performance.getEntriesByName("artiscan:metadata").length) performance.mark("artiscan:metadata");

  await initialised;
  if (!gpu) setUseCPURendering(true); // headless browsers, old workstations, software WebGL
  root.dataset.rendering = gpu ? "gpu" : "cpu";
  root.dataset.webgl = webgl();
  performance.mark("artiscan:init");
  dicomImageLoaderInit({ maxWebWorkers: Math.max(1, Math.min(4, navigator.hardwareConcurrency - 1)) });
  toolsInit();

  // One position per frame: a multi-frame (Enhanced MR) instance is as many slices as it has
  // frames, in frame order, each position under its instance's metadata. That is registered
  // once, for frame 1, as a copy: Cornerstone3D's loader derives each frame's own from the
  // functional groups, writing into the object it was given.
  const imageIds: string[] = [];
  const positions: DicomJson[] = [];
  const frameOf: number[] = []; // 0: a single-frame instance; else the frame number
  for (const item of items) {
    dicomImageLoader.wadors.metaDataManager.add(frameImageId(studyUid, seriesUid, item), structuredClone(item) as never);
    const frames = frameCount(item);
    for (let frame = 1; frame <= frames; frame += 1) {
      imageIds.push(frameImageId(studyUid, seriesUid, item, frame));
      positions.push(item);
      frameOf.push(frames > 1 ? frame : 0);
    }
  }
  items = positions;
  // A position's key: its SOP Instance UID, with `/frames/N` for a frame of a multi-frame
  // instance — as a result names the slice it is for (`resultKey`).
  const sops = items.map((item, i) => {
    const sop = value<string>(item, "00080018") ?? "";
    return frameOf[i] ? `${sop}/frames/${frameOf[i]}` : sop;
  });
  // What the header panel and the overlay grid read: a frame's own values (its functional
  // groups, as the loader combines them) for a frame of a multi-frame instance.
  const itemAt = (i: number): DicomJson =>
    frameOf[i] ? ((dicomImageLoader.wadors.metaDataManager.get(imageIds[i]) as unknown as DicomJson | undefined) ?? items[i]) : items[i];
  const rowsOf = (i: number): number => Number(value(items[i], "00280010") ?? 0);
  const colsOf = (i: number): number => Number(value(items[i], "00280011") ?? 0);

  const engine = getRenderingEngine(ENGINE_ID) ?? new RenderingEngine(ENGINE_ID);
  engine.enableElement({ viewportId: VIEWPORT_ID, type: Enums.ViewportType.STACK, element });
  const viewport = engine.getViewport(VIEWPORT_ID) as Types.IStackViewport;

  for (const tool of [WindowLevelTool, PanTool, ZoomTool, StackScrollTool]) addTool(tool);
  const group = ToolGroupManager.createToolGroup(TOOL_GROUP_ID);
  if (!group) throw new Error("tool group exists");
  for (const tool of [WindowLevelTool, PanTool, ZoomTool, StackScrollTool]) group.addTool(tool.toolName);
  group.setToolActive(WindowLevelTool.toolName, { bindings: [{ mouseButton: ToolEnums.MouseBindings.Primary }] });
  group.setToolActive(PanTool.toolName, { bindings: [{ mouseButton: ToolEnums.MouseBindings.Auxiliary }] });
  group.setToolActive(ZoomTool.toolName, { bindings: [{ mouseButton: ToolEnums.MouseBindings.Secondary }] });
  group.setToolActive(StackScrollTool.toolName, { bindings: [{ mouseButton: ToolEnums.MouseBindings.Wheel }] });
  group.addViewport(VIEWPORT_ID, ENGINE_ID);

  const failed = (event: Event): void => {
    const detail = (event as CustomEvent<{ error?: { message?: string } | string }>).detail;
    const why = typeof detail?.error === "string" ? detail.error : detail?.error?.message ?? "the image could not be decoded";
    flash(`A slice failed to load: ${why}`, true);
  };
  eventTarget.addEventListener(Enums.Events.IMAGE_LOAD_FAILED, failed);

  const middle = Math.floor(imageIds.length / 2);
  // The slice shown first is asked for now, while the viewport is set up.
  void imageLoader.loadAndCacheImage(imageIds[middle]).catch(() => undefined);
  try {
    await viewport.setStack(imageIds, middle);
  } catch (error) {
    say(`Could not load the images: ${(error as Error)?.message ?? String(error)}`, "error");
    return;
  }
  viewport.render();
  // Drawn by the viewport from here on: the preview's canvas (./preview) goes.
  document.querySelector("#viewport-preview")?.remove();
  performance.mark("artiscan:interactive");
  root.dataset.interactiveMs = performance.now().toFixed(0);
  if (!root.dataset.firstImageMs) {
    performance.mark("artiscan:first-image");
    root.dataset.firstImageMs = root.dataset.interactiveMs;
  }
  say(`${items.length} images · first image ${root.dataset.firstImageMs} ms after opening`, "ready");

  // --- results, overlays, review -------------------------------------------------------------
  let result: SeriesResult | null = null;
  let review: SeriesReviewSummary | null = null;
  const overlays = new OverlayState();
  const spacingOf = (i: number): [number, number] => {
    const spacing = itemAt(i)["00280030"]?.Value as number[] | undefined;
    return spacing && spacing.length === 2 ? [Number(spacing[0]) || 1, Number(spacing[1]) || 1] : [1, 1];
  };
  const maskOverlay = new MaskOverlay(viewport, overlays, (i) => ({
    columns: colsOf(i),
    rows: rowsOf(i),
    spacing: spacingOf(i),
  }));
  const loadedMasks = new Map<string, string>(); // `${type}:${position}` -> URL drawn there
  let editing: { finding: FindingResult; position: number; type: ArtifactType } | null = null;

  const historyOf = (findingId: number): FindingReview[] => review?.findings[String(findingId)] ?? [];
  const maskUrlOf = (finding: FindingResult): string | null => {
    const corrected = historyOf(finding.id).find((r) => r.mask_url);
    return corrected?.mask_url ?? finding.mask_url;
  };
  const positionOfSop = new Map(sops.map((sop, i) => [sop, i]));

  overlays.onChange(() => {
    root.dataset.overlaysVisible = overlays.visibleTypes().join(",");
    maskOverlay.draw();
  });

  const loadMasks = async (): Promise<void> => {
    if (!result) return;
    // A finding a reviewer rejected is not there: its mask is not drawn (its list entry stays,
    // marked rejected, so it can be accepted again).
    const shown = (f: FindingResult): boolean => f.review_state !== "rejected";
    const added = overlays.setAvailable(result.instances.flatMap((i) => i.findings.filter(shown).map((f) => f.artifact_type)));
    if (added.length && overlaysPanel) renderOverlayControls(overlaysPanel, overlays);
    root.dataset.overlaysVisible = overlays.visibleTypes().join(",");
    const jobs: { position: number; run: () => Promise<void> }[] = [];
    for (const instance of result.instances) {
      const position = positionOfSop.get(resultKey(instance));
      if (position === undefined) continue;
      for (const finding of instance.findings) {
        const url = maskUrlOf(finding);
        const type = finding.artifact_type as ArtifactType;
        const key = `${type}:${position}`;
        if (!shown(finding)) {
          loadedMasks.delete(key);
          maskOverlay.delete(type, position);
          continue;
        }
        if (!url || !ARTIFACT_RGB[type] || loadedMasks.get(key) === url) continue;
        if (editing && editing.type === type && editing.position === position) continue;
        jobs.push({
          position,
          run: async () => {
            const { mask, width, height } = await maskFetchPng(url);
            if (width !== colsOf(position) || height !== rowsOf(position)) throw new Error(`mask ${width}×${height} is not on the image grid`);
            maskOverlay.set(type, position, mask);
            loadedMasks.set(key, url);
            if (position === current()) maskOverlay.draw();
          },
        });
      }
    }
    // The slice on screen first, then outwards, a few at a time.
    const here = current();
    const queue = jobs.sort((a, b) => Math.abs(a.position - here) - Math.abs(b.position - here));
    let failures = 0;
    const worker = async (): Promise<void> => {
      for (let job = queue.shift(); job; job = queue.shift()) {
        try {
          await job.run();
        } catch {
          failures++;
        }
      }
    };
    await Promise.all([worker(), worker(), worker(), worker()]);
    root.dataset.overlaysLoaded = String(loadedMasks.size);
    if (failures) flash(`${failures} overlay mask(s) could not be loaded`, true);
    maskOverlay.draw();
  };

  const showIndex = (): void => {
    if (!seriesIndex || !result) return;
    seriesIndex.className = result.suitability_index === null ? "muted" : band(result.suitability_index);
    seriesIndex.textContent = result.suitability_index === null
      ? `not scored yet (${result.status})`
      : `Series index ${result.suitability_index}/100 — ${result.reason}`;
    if (result.quarantined?.length) {
      const note = document.createElement("span");
      note.className = "error";
      note.textContent = ` · ${result.quarantined.length} slice(s) could not be scored: ${result.quarantined[0].reason}`;
      seriesIndex.append(note);
    }
    if (roiIndex) {
      const value = result.roi_suitability_index;
      roiIndex.hidden = value === undefined || value === null;
      if (!roiIndex.hidden && value != null) {
        roiIndex.className = band(value);
        roiIndex.textContent = `Region of interest ${value}/100${result.roi_reason ? ` — ${result.roi_reason.replace(/^region of interest:\s*/i, "")}` : ""}`;
      }
    }
  };

  const showVerdict = (): void => {
    if (!review) return;
    if (verdictBadge) {
      verdictBadge.hidden = !review.verdict;
      verdictBadge.textContent = review.verdict === "nondiagnostic" ? "non-diagnostic" : review.verdict ?? "";
      verdictBadge.dataset.verdict = review.verdict ?? "";
    }
    if (verdictHistory) {
      verdictHistory.replaceChildren(...review.verdicts.map((v) => {
        const li = document.createElement("li");
        li.textContent = `${v.verdict === "nondiagnostic" ? "non-diagnostic" : "diagnostic"} — ${v.user}, ${new Date(v.created_at).toLocaleString()}${v.comment ? `: “${v.comment}”` : ""}`;
        return li;
      }));
    }
  };

  let roiLayer: RoiLayer | null = null;
  const showRoi = (): void => {
    const polygon = result?.roi?.polygon ?? null;
    roiLayer?.show(polygon as Point[] | null);
    if (roiStatus) {
      const roi = result?.roi;
      roiStatus.textContent = roi
        ? `${roi.polygon.length} points, ${roi.first_instance === null && roi.last_instance === null ? "all slices" : `slices ${roi.first_instance ?? "…"}–${roi.last_instance ?? "…"}${roi.frame ? `, frame ${roi.frame}` : ""}`}`
        : "none";
    }
  };

  const current = (): number => viewport.getCurrentImageIdIndex();

  const showSlice = (index: number): void => {
    if (slider) slider.value = String(index);
    if (sliceLabel) sliceLabel.textContent = `${index + 1} / ${imageIds.length}`;
    if (headers) renderHeaders(headers, itemAt(index));
    if (strip) markStrip(strip, index);
    if (findingsPanel) {
      renderFindings(findingsPanel, result, sops[index], {
        canReview,
        history: historyOf,
        onAction: (finding, action) => void act(finding, action),
        onFocus: (finding) => {
          for (const t of overlays.types) overlays.setVisible(t, t === finding.artifact_type);
        },
      });
    }
    root.dataset.slice = String(index);
    root.dataset.instanceNumber = String(value<number>(items[index], "00200013") ?? "");
    roiLayer?.redraw();
  };

  const loadResult = async (background = false): Promise<void> => {
    try {
      [result, review] = await Promise.all([
        seriesResult(seriesId, { background }),
        seriesReview(seriesId, { background }),
      ]);
    } catch (error) {
      if (seriesIndex) seriesIndex.textContent = `Results could not be loaded: ${(error as Error).message}`;
      return; // the image stays usable without results
    }
    showIndex();
    showVerdict();
    showRoi();
    if (strip) renderStrip(strip, result, sops, (position) => void viewport.setImageIdIndex(position));
    root.dataset.scored = String(result.instances.length);
    showSlice(current());
    await loadMasks();
  };

  // --- review actions ---------------------------------------------------------------------------
  const positionOfFinding = (finding: FindingResult): number => {
    const instance = result?.instances.find((i) => i.findings.some((f) => f.id === finding.id));
    return instance ? positionOfSop.get(resultKey(instance)) ?? current() : current();
  };

  const setEditTool = (mode: "brush" | "eraser"): void => {
    if (!editing) return;
    group.setToolPassive(WindowLevelTool.toolName); // the primary button paints
    maskOverlay.setBrush({ type: editing.type, position: editing.position, mode, radiusMm: Number(brushSize?.value ?? 16) });
    for (const b of document.querySelectorAll<HTMLElement>("#edit-bar .tool")) b.classList.toggle("active", b.dataset.tool === mode);
    root.dataset.editTool = mode;
  };

  const stopEditing = async (restore: boolean): Promise<void> => {
    if (!editing) return;
    const { finding, position, type } = editing;
    editing = null;
    maskOverlay.setBrush(null);
    group.setToolActive(WindowLevelTool.toolName, { bindings: [{ mouseButton: ToolEnums.MouseBindings.Primary }] });
    if (editBar) editBar.hidden = true;
    delete root.dataset.editing;
    delete root.dataset.editTool;
    if (restore) {
      const url = maskUrlOf(finding);
      if (url) {
        const { mask } = await maskFetchPng(url);
        maskOverlay.set(type, position, mask);
        maskOverlay.draw();
      }
    }
  };

  const startCorrect = async (finding: FindingResult): Promise<void> => {
    await stopEditing(true);
    const type = finding.artifact_type as ArtifactType;
    if (!overlays.get(type)) return;
    const position = positionOfFinding(finding);
    await viewport.setImageIdIndex(position);
    overlays.setVisible(type, true);
    editing = { finding, position, type };
    const title = $<HTMLElement>("#edit-title");
    if (title) title.textContent = `Correcting ${artifactLabel(finding.artifact_type)} on slice ${position + 1}`;
    if (editBar) editBar.hidden = false;
    root.dataset.editing = String(finding.id);
    setEditTool("brush");
  };

  const saveCorrection = async (): Promise<void> => {
    if (!editing) return;
    const { finding, position, type } = editing;
    say("Saving the corrected mask…", "busy");
    try {
      const mask = maskOverlay.get(type, position) ?? new Uint8Array(colsOf(position) * rowsOf(position));
      const png = await maskToPngBlob(mask, colsOf(position), rowsOf(position));
      const saved = await findingReview(finding.id, "correct", { maskPngBase64: await blobToBase64(png) });
      if (saved.mask_url) loadedMasks.set(`${finding.artifact_type}:${position}`, saved.mask_url);
      await stopEditing(false);
      flash(`Corrected mask saved (${saved.mask_area_px ?? 0} px)`);
      root.dataset.lastReview = `${finding.id}:correct`;
      await loadResult();
    } catch (error) {
      flash(`The correction was not saved: ${(error as Error).message}`, true);
    }
  };

  const act = async (finding: FindingResult, action: "accept" | "reject" | "correct"): Promise<void> => {
    if (!canReview) return;
    if (action === "correct") {
      await startCorrect(finding);
      return;
    }
    try {
      await findingReview(finding.id, action);
      flash(`${artifactLabel(finding.artifact_type)} ${action === "accept" ? "accepted" : "rejected"}`);
      root.dataset.lastReview = `${finding.id}:${action}`;
      await loadResult();
    } catch (error) {
      flash(`Not saved: ${(error as Error).message}`, true);
    }
  };

  const firstOpenFinding = (): FindingResult | undefined => {
    const instance = result?.instances.find((i) => resultKey(i) === sops[current()]);
    return instance?.findings.find((f) => f.review_state === "pending") ?? instance?.findings[0];
  };

  const setVerdict = async (verdict: "diagnostic" | "nondiagnostic"): Promise<void> => {
    if (!canReview) return;
    try {
      await seriesVerdictSet(seriesId, verdict, verdictComment?.value ?? "");
      if (verdictComment) verdictComment.value = "";
      flash(`Series marked ${verdict === "diagnostic" ? "diagnostic" : "non-diagnostic"}`);
      review = await seriesReview(seriesId);
      showVerdict();
    } catch (error) {
      flash(`Verdict not saved: ${(error as Error).message}`, true);
    }
  };

  // --- region of interest ----------------------------------------------------------------------
  const svg = $<SVGSVGElement>("#roi-layer");
  if (svg) {
    roiLayer = new RoiLayer(svg, viewport, () => [colsOf(current()), rowsOf(current())], (polygon) => {
      const all = $<HTMLInputElement>("#roi-all")?.checked ?? true;
      const here = value<number>(items[current()], "00200013") ?? null;
      void (async () => {
        try {
          // "This slice": its instance, and its frame when it is one of a multi-frame instance.
          const frame = all || !frameOf[current()] ? null : frameOf[current()];
          await roiSet(seriesId, { polygon, first_instance: all ? null : here, last_instance: all ? null : here, frame });
          flash("Region of interest saved");
          await loadResult();
        } catch (error) {
          const why = error instanceof ApiError && (error.status === 404 || error.status === 405)
            ? "this server does not support regions yet"
            : (error as Error).message;
          flash(`Region not saved: ${why}`, true);
          showRoi();
        }
      })();
    });
  }
  const drawRoi = (): void => {
    if (!canReview || !roiLayer) return;
    group.setToolPassive(WindowLevelTool.toolName);
    roiLayer.start();
    root.dataset.roiDrawing = "true";
  };
  const endRoi = (finish: boolean): void => {
    if (!roiLayer?.isDrawing) return;
    if (finish) roiLayer.finish();
    else roiLayer.cancel();
    delete root.dataset.roiDrawing;
    group.setToolActive(WindowLevelTool.toolName, { bindings: [{ mouseButton: ToolEnums.MouseBindings.Primary }] });
    showRoi();
  };
  svg?.addEventListener("dblclick", (e) => {
    e.preventDefault();
    endRoi(true);
  });
  $("#roi-draw")?.addEventListener("click", drawRoi);
  $("#roi-clear")?.addEventListener("click", () => {
    void (async () => {
      try {
        await roiClear(seriesId);
        flash("Region of interest cleared");
        await loadResult();
      } catch (error) {
        flash(`Region not cleared: ${(error as Error).message}`, true);
      }
    })();
  });

  // --- controls --------------------------------------------------------------------------------
  $("#tool-brush")?.addEventListener("click", () => setEditTool("brush"));
  $("#tool-eraser")?.addEventListener("click", () => setEditTool("eraser"));
  brushSize?.addEventListener("input", () => setEditTool((root.dataset.editTool as "brush" | "eraser") ?? "brush"));
  $("#edit-save")?.addEventListener("click", () => void saveCorrection());
  $("#edit-cancel")?.addEventListener("click", () => void stopEditing(true));
  $("#verdict-diagnostic")?.addEventListener("click", () => void setVerdict("diagnostic"));
  $("#verdict-nondiagnostic")?.addEventListener("click", () => void setVerdict("nondiagnostic"));

  if (slider) {
    slider.max = String(imageIds.length - 1);
    slider.addEventListener("input", () => void viewport.setImageIdIndex(Number(slider.value)));
  }
  element.addEventListener(Enums.Events.STACK_NEW_IMAGE, () => showSlice(current()));
  element.addEventListener(Enums.Events.CAMERA_MODIFIED, () => roiLayer?.redraw());
  // Where the image lies on the canvas (CSS pixels: left, top, right, bottom), for tests and the
  // benchmark to find a mask's pixels on screen.
  element.addEventListener(Enums.Events.IMAGE_RENDERED, () => {
    maskOverlay.draw();
    const imageId = viewport.getCurrentImageId();
    const i = current();
    // Pixel (r, c) is centred on image coordinates (c, r): the image spans -0.5 .. size - 0.5.
    const a = utilities.imageToWorldCoords(imageId, [-0.5, -0.5]);
    const b = utilities.imageToWorldCoords(imageId, [colsOf(i) - 0.5, rowsOf(i) - 0.5]);
    if (!a || !b) return;
    const [x0, y0] = viewport.worldToCanvas(a);
    const [x1, y1] = viewport.worldToCanvas(b);
    root.dataset.imageRect = [x0, y0, x1, y1].map((v) => v.toFixed(1)).join(",");
    root.dataset.renders = String(Number(root.dataset.renders ?? 0) + 1);
  });
  showSlice(middle);
  void loadResult();
  // Every frame of the stack, outwards from the slice on screen, two at a time, so scrolling
  // never waits for the network (Cornerstone3D loads a stack's frames only when shown).
  const prefetch = imageIds
    .map((id, i) => ({ id, distance: Math.abs(i - middle) }))
    .sort((a, b) => a.distance - b.distance)
    .map((p) => p.id);
  const prefetchNext = async (): Promise<void> => {
    for (let id = prefetch.shift(); id; id = prefetch.shift()) {
      await imageLoader.loadAndCacheImage(id).catch(() => undefined);
    }
    root.dataset.framesLoaded = "true";
  };
  void Promise.all([prefetchNext(), prefetchNext()]);

  const reloadResult = coalesce(() => void loadResult(true), 300); // on live events
  const reloadReview = coalesce(() => {
    void (async () => {
      review = await seriesReview(seriesId, { background: true }); // on a live event
      result = await seriesResult(seriesId, { background: true });
      showVerdict();
      showSlice(current());
      await loadMasks();
    })();
  }, 300);
  connectEvents((event) => {
    const effect = eventEffect(event, seriesId);
    if (effect === "result") reloadResult();
    else if (effect === "review") reloadReview();
  }, (state) => {
    root.dataset.live = state;
  });

  const go = (delta: number): void => {
    const next = Math.min(imageIds.length - 1, Math.max(0, current() + delta));
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
      const at = current();
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
  $("#reset")?.addEventListener("click", reset);
  $("#cine")?.addEventListener("click", toggleCine);
  window.addEventListener("keydown", (event) => {
    if (typing(event) || event.ctrlKey || event.metaKey || event.altKey) return;
    const key = event.key;
    if (key === "?") help.toggle();
    else if (key === "Escape") {
      if (help.isOpen()) help.toggle();
      else if (roiLayer?.isDrawing) endRoi(false);
      else void stopEditing(true);
    } else if (key === "Enter") {
      if (roiLayer?.isDrawing) endRoi(true);
      else if (editing) void saveCorrection();
      else return;
    } else if (key === "ArrowDown" || key === "ArrowRight" || key === "j") go(1);
    else if (key === "ArrowUp" || key === "ArrowLeft" || key === "k") go(-1);
    else if (key === "Home") void viewport.setImageIdIndex(0);
    else if (key === "End") void viewport.setImageIdIndex(imageIds.length - 1);
    else if (key === "r") reset();
    else if (key === " ") toggleCine();
    else if (key === "w" && presetSelect) {
      const names = Object.keys(PRESETS);
      presetSelect.value = names[(names.indexOf(presetSelect.value) + 1) % names.length];
      applyPreset(presetSelect.value);
    } else if (/^[0-9]$/.test(key)) overlays.toggleByDigit(Number(key));
    else if (key === "o") overlays.toggleAll();
    else if (key === "[") overlays.shiftOpacity(-0.1);
    else if (key === "]") overlays.shiftOpacity(0.1);
    else if (key === "b" && editing) setEditTool("brush");
    else if (key === "e" && editing) setEditTool("eraser");
    else if ((key === "a" || key === "c" || key === "x") && !editing) {
      const finding = firstOpenFinding();
      if (finding) void act(finding, key === "a" ? "accept" : key === "c" ? "correct" : "reject");
    } else if (key === "d") void setVerdict("diagnostic");
    else if (key === "n") void setVerdict("nondiagnostic");
    else if (key === "p") drawRoi();
    else return;
    event.preventDefault();
  });
  window.addEventListener("resize", () => {
    engine.resize(true, true);
    roiLayer?.redraw();
  });
}

void start().catch((error: unknown) => {
  say(`The viewer failed to start: ${(error as Error)?.message ?? String(error)}`, "error");
});
