// The scoring result beside the image: a strip of per-slice indices (click to jump), the
// overlay toggles, and the current slice's findings with advice and review actions.

import { resultKey, type FindingResult, type FindingReview, type SeriesResult } from "../api/client";
import { artifactColour, artifactLabel } from "../common/artifacts";
import type { OverlayState } from "./overlays";

export function band(index: number): string {
  return index < 50 ? "suit-bad" : index < 80 ? "suit-warn" : "suit-ok";
}

export function renderStrip(
  target: HTMLElement,
  result: SeriesResult,
  sopOrder: string[],
  onPick: (position: number) => void,
): void {
  const bySop = new Map(result.instances.map((i) => [resultKey(i), i]));
  target.replaceChildren();
  sopOrder.forEach((sop, position) => {
    const cell = document.createElement("button");
    cell.type = "button";
    const scored = bySop.get(sop);
    cell.className = `strip-cell ${scored ? band(scored.suitability_index) : "unscored"}`;
    cell.dataset.position = String(position);
    cell.title = scored ? `slice ${position + 1}: ${scored.suitability_index}/100 ${scored.reason}` : "not scored yet";
    cell.textContent = scored ? String(scored.suitability_index) : "·";
    if (scored?.findings.length) {
      const dots = document.createElement("span");
      dots.className = "strip-dots";
      for (const f of scored.findings) {
        const dot = document.createElement("i");
        dot.style.background = artifactColour(f.artifact_type);
        dots.append(dot);
      }
      cell.append(dots);
    }
    cell.addEventListener("click", () => onPick(position));
    target.append(cell);
  });
}

export function markStrip(target: HTMLElement, position: number): void {
  for (const cell of target.querySelectorAll<HTMLElement>(".strip-cell")) {
    cell.classList.toggle("current", cell.dataset.position === String(position));
  }
}

export function renderOverlayControls(target: HTMLElement, state: OverlayState): void {
  target.replaceChildren();
  if (state.types.length === 0) {
    const p = document.createElement("p");
    p.className = "muted";
    p.textContent = "No findings to overlay.";
    target.append(p);
    return;
  }
  state.types.forEach((type, i) => {
    const setting = state.get(type);
    const row = document.createElement("div");
    row.className = "overlay-row";
    row.dataset.type = type;
    const label = document.createElement("label");
    const box = document.createElement("input");
    box.type = "checkbox";
    box.checked = setting?.visible ?? true;
    box.dataset.type = type;
    box.className = "overlay-toggle";
    box.addEventListener("change", () => state.setVisible(type, box.checked));
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = artifactColour(type);
    const name = document.createElement("span");
    name.textContent = `${artifactLabel(type)}`;
    const key = document.createElement("kbd");
    key.textContent = i < 10 ? String((i + 1) % 10) : "";
    label.append(box, swatch, name, key);
    const opacity = document.createElement("input");
    opacity.type = "range";
    opacity.min = "0";
    opacity.max = "100";
    opacity.value = String(Math.round((setting?.opacity ?? 0.5) * 100));
    opacity.className = "overlay-opacity";
    opacity.dataset.type = type;
    opacity.setAttribute("aria-label", `${artifactLabel(type)} opacity`);
    opacity.addEventListener("input", () => state.setOpacity(type, Number(opacity.value) / 100));
    row.append(label, opacity);
    target.append(row);
  });
  state.onChange((type, setting) => {
    const box = target.querySelector<HTMLInputElement>(`input.overlay-toggle[data-type="${type}"]`);
    if (box) box.checked = setting.visible;
    const slider = target.querySelector<HTMLInputElement>(`input.overlay-opacity[data-type="${type}"]`);
    if (slider) slider.value = String(Math.round(setting.opacity * 100));
  });
}

const STATE_LABEL: Record<string, string> = {
  pending: "not reviewed",
  accepted: "accepted",
  corrected: "corrected",
  rejected: "rejected",
};

export interface FindingActions {
  canReview: boolean;
  onAction: (finding: FindingResult, action: "accept" | "reject" | "correct") => void;
  onFocus: (finding: FindingResult) => void;
  history: (findingId: number) => FindingReview[];
}

export function renderFindings(target: HTMLElement, result: SeriesResult | null, sop: string, actions: FindingActions): void {
  target.replaceChildren();
  const head = document.createElement("p");
  const scored = result?.instances.find((i) => resultKey(i) === sop);
  if (!result || !scored) {
    head.className = "muted";
    head.textContent = result ? "Not scored yet." : "No result yet.";
    target.append(head);
    return;
  }
  head.className = band(scored.suitability_index);
  const roi = scored.roi_suitability_index;
  head.textContent = `Index ${scored.suitability_index}/100${roi != null ? ` (region ${roi}/100)` : ""} — ${scored.reason}`;
  head.id = "slice-index";
  target.append(head);
  if (scored.findings.length === 0) {
    const none = document.createElement("p");
    none.className = "muted";
    none.textContent = "No artifact found on this slice.";
    target.append(none);
  }
  scored.findings.forEach((finding, i) => {
    const item = document.createElement("div");
    item.className = `finding state-${finding.review_state}`;
    item.dataset.findingId = String(finding.id);
    item.dataset.type = finding.artifact_type;
    item.dataset.state = finding.review_state;
    item.style.borderLeftColor = artifactColour(finding.artifact_type);
    const title = document.createElement("button");
    title.type = "button";
    title.className = "finding-title";
    title.title = "Show only this overlay";
    const area = finding.area_mm2 !== null ? `${finding.area_mm2.toFixed(0)} mm²` : `${finding.area_px} px`;
    title.textContent = `${artifactLabel(finding.artifact_type)} · ${area} · ${(100 * finding.head_fraction).toFixed(0)} % of head · confidence ${(100 * finding.confidence).toFixed(0)} %`;
    title.addEventListener("click", () => actions.onFocus(finding));
    const advice = document.createElement("p");
    advice.className = "advice";
    advice.textContent = finding.advice || "No advice for this type.";
    const state = document.createElement("p");
    state.className = "review-state";
    const latest = actions.history(finding.id)[0];
    state.textContent = latest
      ? `${STATE_LABEL[finding.review_state] ?? finding.review_state} by ${latest.user}, ${new Date(latest.created_at).toLocaleString()}${latest.comment ? ` — “${latest.comment}”` : ""}`
      : STATE_LABEL[finding.review_state] ?? finding.review_state;
    item.append(title, advice, state);
    if (actions.canReview) {
      const bar = document.createElement("div");
      bar.className = "finding-actions";
      const keys = i === 0 ? { accept: " (a)", correct: " (c)", reject: " (x)" } : { accept: "", correct: "", reject: "" };
      for (const action of ["accept", "correct", "reject"] as const) {
        const b = document.createElement("button");
        b.type = "button";
        b.className = `ghost act-${action}`;
        b.dataset.action = action;
        b.textContent = action[0].toUpperCase() + action.slice(1);
        b.title = `${b.textContent} this finding${keys[action]}`;
        b.addEventListener("click", () => actions.onAction(finding, action));
        bar.append(b);
      }
      item.append(bar);
    }
    target.append(item);
  });
}
