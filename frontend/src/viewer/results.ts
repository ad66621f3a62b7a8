// The scoring result beside the image: a strip of per-slice indices (click to jump) and the
// current slice's findings with the operator advice.

export interface FindingResult {
  artifact_type: string;
  area_px: number;
  area_mm2: number | null;
  head_fraction: number;
  confidence: number;
  advice: string;
}

export interface InstanceResult {
  sop_uid: string;
  instance_number: number | null;
  suitability_index: number;
  reason: string;
  findings: FindingResult[];
}

export interface SeriesResult {
  status: string;
  model: string | null;
  suitability_index: number | null;
  reason: string;
  instances: InstanceResult[];
}

export async function seriesResult(seriesId: string): Promise<SeriesResult> {
  const response = await fetch(`/api/series/${seriesId}/result/`, {
    credentials: "same-origin",
    headers: { Accept: "application/json" },
  });
  if (!response.ok) throw new Error(`HTTP ${response.status}`);
  return (await response.json()) as SeriesResult;
}

function band(index: number): string {
  return index < 50 ? "suit-bad" : index < 80 ? "suit-warn" : "suit-ok";
}

export function renderStrip(
  target: HTMLElement,
  result: SeriesResult,
  sopOrder: string[],
  onPick: (position: number) => void,
): void {
  const bySop = new Map(result.instances.map((i) => [i.sop_uid, i]));
  target.replaceChildren();
  sopOrder.forEach((sop, position) => {
    const cell = document.createElement("button");
    cell.type = "button";
    const scored = bySop.get(sop);
    cell.className = `strip-cell ${scored ? band(scored.suitability_index) : "unscored"}`;
    cell.title = scored ? `slice ${position + 1}: ${scored.suitability_index}/100 ${scored.reason}` : "not scored yet";
    cell.textContent = scored ? String(scored.suitability_index) : "·";
    cell.addEventListener("click", () => onPick(position));
    target.append(cell);
  });
}

export function renderFindings(target: HTMLElement, result: SeriesResult, sop: string): void {
  const scored = result.instances.find((i) => i.sop_uid === sop);
  target.replaceChildren();
  const head = document.createElement("p");
  if (!scored) {
    head.textContent = "Not scored yet.";
    target.append(head);
    return;
  }
  head.className = band(scored.suitability_index);
  head.textContent = `Index ${scored.suitability_index}/100 — ${scored.reason}`;
  target.append(head);
  for (const finding of scored.findings) {
    const item = document.createElement("div");
    item.className = "finding";
    const title = document.createElement("strong");
    const area = finding.area_mm2 !== null ? `${finding.area_mm2.toFixed(0)} mm²` : `${finding.area_px} px`;
    title.textContent = `${finding.artifact_type.replace("_", " ")} · ${(100 * finding.head_fraction).toFixed(0)} % of head · ${area}`;
    const advice = document.createElement("p");
    advice.textContent = finding.advice;
    item.append(title, advice);
    target.append(item);
  }
}
