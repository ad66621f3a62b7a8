// The worklist's filters in the page URL (so a filtered list can be bookmarked and reloaded),
// and the index badge colour.

import type { WorklistQuery } from "../api/client";

export function readQuery(search: string): WorklistQuery {
  const p = new URLSearchParams(search);
  const query: WorklistQuery = {};
  if (p.get("q")) query.q = p.get("q") ?? "";
  if (p.get("site") && /^\d+$/.test(p.get("site") ?? "")) query.site = Number(p.get("site"));
  if (p.get("from")) query.received_from = p.get("from") ?? "";
  if (p.get("to")) query.received_to = p.get("to") ?? "";
  if (p.get("nondiagnostic") === "1") query.nondiagnostic = true;
  if (p.get("unreviewed") === "1") query.unreviewed = true;
  if (p.get("sort")) query.ordering = p.get("sort") ?? undefined;
  const offset = Number(p.get("offset"));
  if (Number.isInteger(offset) && offset > 0) query.offset = offset;
  return query;
}

export function writeQuery(query: WorklistQuery): string {
  const p = new URLSearchParams();
  if (query.q) p.set("q", query.q);
  if (query.site) p.set("site", String(query.site));
  if (query.received_from) p.set("from", query.received_from);
  if (query.received_to) p.set("to", query.received_to);
  if (query.nondiagnostic) p.set("nondiagnostic", "1");
  if (query.unreviewed) p.set("unreviewed", "1");
  if (query.ordering && query.ordering !== "received") p.set("sort", query.ordering);
  if (query.offset) p.set("offset", String(query.offset));
  const s = p.toString();
  return s ? `?${s}` : "";
}

/** Red (0) through amber (50) to green (100), the same bands as the viewer's strip. */
export function badgeColour(index: number): string {
  const i = Math.max(0, Math.min(100, index));
  const hue = i < 50 ? (i / 50) * 40 : 40 + ((i - 50) / 50) * 80;
  return `hsl(${hue.toFixed(0)}, 75%, ${i < 50 ? 58 : 50}%)`;
}
