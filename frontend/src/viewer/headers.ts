// The acquisition values the operator advice uses, shown beside the image.

import { value, type DicomJson } from "../api/dicomweb";

const FIELDS: [string, string, (v: unknown) => string][] = [
  ["Field strength", "00180087", (v) => `${Number(v).toFixed(1)} T`],
  ["Pixel bandwidth", "00180095", (v) => `${Number(v).toFixed(0)} Hz/px`],
  ["Phase encoding", "00181312", (v) => (v === "ROW" ? "along rows (L–R in axial)" : v === "COL" ? "along columns" : String(v))],
  ["TR / TE", "00180080", (v) => `${Number(v).toFixed(0)} ms`],
  ["TE", "00180081", (v) => `${Number(v).toFixed(1)} ms`],
  ["TI", "00180082", (v) => `${Number(v).toFixed(0)} ms`],
  ["Flip angle", "00181314", (v) => `${Number(v).toFixed(0)}°`],
  ["Matrix", "00280010", (v) => String(v)],
  ["Pixel spacing", "00280030", (v) => `${Number(v).toFixed(2)} mm`],
  ["Slice thickness", "00180050", (v) => `${Number(v).toFixed(1)} mm`],
];

// Where an Enhanced MR image's frame keeps a classic value: EffectiveEchoTime, InversionTimes.
const FRAME_TAGS: Record<string, string> = { "00180081": "00189082", "00180082": "00189079" };

export function renderHeaders(target: HTMLElement, item: DicomJson): void {
  const list = document.createElement("dl");
  const get = (tag: string): unknown => value(item, tag) ?? (FRAME_TAGS[tag] ? value(item, FRAME_TAGS[tag]) : undefined);
  for (const [label, tag, format] of FIELDS) {
    const v = get(tag);
    if (v === undefined) continue;
    let text = format(v);
    if (tag === "00280010") text = `${v} × ${value(item, "00280011") ?? "?"}`;
    if (tag === "00180080") text = `${Number(v).toFixed(0)} / ${Number(get("00180081") ?? 0).toFixed(1)} ms`;
    if (tag === "00180081") continue;
    const dt = document.createElement("dt");
    dt.textContent = label;
    const dd = document.createElement("dd");
    dd.textContent = text;
    list.append(dt, dd);
  }
  target.replaceChildren(list);
}
