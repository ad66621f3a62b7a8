// Worklist: the series of the user's sites with filters, search, sorting and paging; a coloured
// index badge, the dominant artifact, scanner, protocol and time; live updates from events.

import { getJson, seriesList, type SeriesRow, type WorklistQuery } from "../api/client";
import { artifactColour, artifactLabel } from "../common/artifacts";
import { helpInstall, typing } from "../common/help";
import { coalesce, connectEvents, worklistCares, type ArtiscanEvent } from "../realtime/events";
import { badgeColour, readQuery, writeQuery } from "./query";

const $ = <T extends Element>(selector: string): T | null => document.querySelector<T>(selector);
const table = $<HTMLTableSectionElement>("#worklist tbody");
const live = $<HTMLElement>("#live");
const eventsList = $<HTMLOListElement>("#events");
const pageLabel = $<HTMLElement>("#page-label");
const search = $<HTMLInputElement>("#f-q");
const site = $<HTMLSelectElement>("#f-site");
const from = $<HTMLInputElement>("#f-from");
const to = $<HTMLInputElement>("#f-to");
const nondiagnostic = $<HTMLInputElement>("#f-nondiagnostic");
const unreviewed = $<HTMLInputElement>("#f-unreviewed");
const PAGE = 25;

let query: WorklistQuery = readQuery(window.location.search);
let total = 0;
let rows: SeriesRow[] = [];
let selected = -1;

function cell(content: string | Node, className = ""): HTMLTableCellElement {
  const td = document.createElement("td");
  if (typeof content === "string") td.textContent = content; // never innerHTML: DICOM text
  else td.append(content);
  if (className) td.className = className;
  return td;
}

/** The images column: instances, with the slices they hold when that differs (the frames of an
 * Enhanced MR instance). */
function imagesLabel(row: SeriesRow): string {
  const slices = row.slice_count ?? row.instance_count;
  return slices === row.instance_count ? String(row.instance_count) : `${row.instance_count} (${slices} slices)`;
}

function badge(row: SeriesRow): HTMLElement {
  const span = document.createElement("span");
  span.className = "badge";
  if (row.suitability_index === null) {
    span.classList.add("none");
    span.textContent = "—";
    span.title = "not scored yet";
    return span;
  }
  span.textContent = String(row.suitability_index);
  span.style.background = badgeColour(row.suitability_index);
  span.title = `suitability index ${row.suitability_index}/100${row.nondiagnostic ? ", non-diagnostic" : ""}`;
  span.dataset.index = String(row.suitability_index);
  return span;
}

function artifact(type: string | null): Node {
  const span = document.createElement("span");
  if (!type) {
    span.className = "muted";
    span.textContent = "—";
    return span;
  }
  const swatch = document.createElement("span");
  swatch.className = "swatch";
  swatch.style.background = artifactColour(type);
  span.append(swatch, ` ${artifactLabel(type)}`);
  return span;
}

function render(previous: Map<string, string>): void {
  if (!table) return;
  table.replaceChildren();
  if (rows.length === 0) {
    const tr = document.createElement("tr");
    tr.className = "empty";
    const filtered = Boolean(query.q || query.site || query.received_from || query.received_to || query.nondiagnostic || query.unreviewed);
    const td = cell(filtered ? "No series match these filters." : "No series yet. Send images from the scanner or upload a series.");
    td.colSpan = 10;
    tr.append(td);
    table.append(tr);
  }
  rows.forEach((row, i) => {
    const tr = document.createElement("tr");
    tr.dataset.seriesId = row.id;
    if (i === selected) tr.classList.add("selected");
    const link = document.createElement("a");
    link.href = `/series/${row.id}/`;
    link.textContent = `${row.series_number ?? ""} ${row.description || "(no description)"}`.trim();
    const verdict = row.verdict === "nondiagnostic" ? "non-diagnostic" : row.verdict === "diagnostic" ? "diagnostic" : "not reviewed";
    tr.append(
      cell(new Date(row.received_at).toLocaleString()),
      cell(row.site_name),
      cell(link),
      cell(row.protocol),
      cell(row.scanner ?? "—"),
      cell(imagesLabel(row)),
      cell(row.status),
      cell(badge(row), "index"),
      cell(artifact(row.dominant_artifact)),
      cell(verdict, row.verdict ? `verdict-${row.verdict}` : "muted"),
    );
    tr.addEventListener("click", (e) => {
      if (!(e.target instanceof HTMLAnchorElement)) window.location.href = link.href;
    });
    const signature = `${row.status}|${row.suitability_index}|${row.verdict}|${row.instance_count}|${row.slice_count}`;
    if (previous.size && previous.get(row.id) !== signature) tr.classList.add("flash");
    table.append(tr);
  });
  const first = total === 0 ? 0 : (query.offset ?? 0) + 1;
  if (pageLabel) pageLabel.textContent = `${first}–${(query.offset ?? 0) + rows.length} of ${total}`;
  const prev = $<HTMLButtonElement>("#prev");
  const next = $<HTMLButtonElement>("#next");
  if (prev) prev.disabled = (query.offset ?? 0) === 0;
  if (next) next.disabled = (query.offset ?? 0) + rows.length >= total;
  for (const th of document.querySelectorAll<HTMLElement>("th.sortable")) {
    const key = th.dataset.sort ?? "";
    const ordering = query.ordering ?? "received";
    // "received" is newest first; "suitability" worst first: both read as the natural order.
    th.setAttribute("aria-sort", ordering === key ? (key === "received" ? "descending" : "ascending") : ordering === `-${key}` ? (key === "received" ? "ascending" : "descending") : "none");
  }
}

let loading = 0;
/** ``background``: a reload on a live event, not a person's request (not use of the session). */
async function refresh(background = false): Promise<void> {
  const ticket = ++loading;
  const previous = new Map(rows.map((r) => [r.id, `${r.status}|${r.suitability_index}|${r.verdict}|${r.instance_count}|${r.slice_count}`]));
  try {
    const page = await seriesList({ ...query, limit: PAGE }, { background });
    if (ticket !== loading) return; // a newer request is on its way
    rows = page.results;
    total = page.count;
    render(previous);
    table?.setAttribute("data-loaded", String(loading));
  } catch (error) {
    if (ticket !== loading || !table) return;
    const td = cell(`Could not load the worklist: ${(error as Error).message}`, "error");
    td.colSpan = 10;
    const tr = document.createElement("tr");
    tr.append(td);
    table.replaceChildren(tr);
  }
}

function apply(change: Partial<WorklistQuery>): void {
  query = { ...query, ...change };
  if (!("offset" in change)) query.offset = 0;
  history.replaceState(null, "", `${window.location.pathname}${writeQuery(query)}`);
  void refresh();
}

function fillForm(): void {
  if (search) search.value = query.q ?? "";
  if (from) from.value = query.received_from ?? "";
  if (to) to.value = query.received_to ?? "";
  if (nondiagnostic) nondiagnostic.checked = Boolean(query.nondiagnostic);
  if (unreviewed) unreviewed.checked = Boolean(query.unreviewed);
  if (site) site.value = query.site ? String(query.site) : "";
}

async function loadSites(): Promise<void> {
  try {
    const sites = await getJson<{ id: number; name: string }[]>("/api/sites/");
    for (const s of sites) {
      const option = document.createElement("option");
      option.value = String(s.id);
      option.textContent = s.name;
      site?.append(option);
    }
    if (site) site.value = query.site ? String(query.site) : "";
    if (sites.length < 2 && site) site.closest("label")?.setAttribute("hidden", "");
  } catch {
    site?.closest("label")?.setAttribute("hidden", "");
  }
}

const searchLater = coalesce(() => apply({ q: search?.value ?? "" }), 250);
search?.addEventListener("input", searchLater);
site?.addEventListener("change", () => apply({ site: site.value ? Number(site.value) : null }));
from?.addEventListener("change", () => apply({ received_from: from.value }));
to?.addEventListener("change", () => apply({ received_to: to.value }));
nondiagnostic?.addEventListener("change", () => apply({ nondiagnostic: nondiagnostic.checked }));
unreviewed?.addEventListener("change", () => apply({ unreviewed: unreviewed.checked }));
$("#f-clear")?.addEventListener("click", () => {
  query = { ordering: query.ordering };
  fillForm();
  apply({});
});
$("#prev")?.addEventListener("click", () => apply({ offset: Math.max(0, (query.offset ?? 0) - PAGE) }));
$("#next")?.addEventListener("click", () => apply({ offset: (query.offset ?? 0) + PAGE }));
for (const th of document.querySelectorAll<HTMLElement>("th.sortable")) {
  th.addEventListener("click", () => {
    const key = th.dataset.sort ?? "received";
    apply({ ordering: query.ordering === key ? `-${key}` : key });
  });
}

const help = helpInstall($<HTMLElement>("#help") ?? document.createElement("div"), "Worklist shortcuts", [
  ["/", "search"],
  ["j k", "next / previous row"],
  ["Enter", "open the selected series"],
  ["← →", "previous / next page"],
  ["u", "not yet reviewed only"],
  ["n", "non-diagnostic only"],
  ["?", "this help"],
]);
$("#help-button")?.addEventListener("click", help.toggle);
window.addEventListener("keydown", (event) => {
  if (typing(event) || event.ctrlKey || event.metaKey || event.altKey) {
    if (event.key === "Escape" && event.target instanceof HTMLElement) event.target.blur();
    return;
  }
  const select = (i: number): void => {
    selected = Math.max(0, Math.min(rows.length - 1, i));
    table?.querySelectorAll("tr").forEach((tr, n) => tr.classList.toggle("selected", n === selected));
  };
  if (event.key === "?") help.toggle();
  else if (event.key === "Escape" && help.isOpen()) help.toggle();
  else if (event.key === "/") search?.focus();
  else if (event.key === "j") select(selected + 1);
  else if (event.key === "k") select(selected - 1);
  else if (event.key === "Enter" && rows[selected]) window.location.href = `/series/${rows[selected].id}/`;
  else if (event.key === "ArrowRight") $<HTMLButtonElement>("#next")?.click();
  else if (event.key === "ArrowLeft") $<HTMLButtonElement>("#prev")?.click();
  else if (event.key === "u" && unreviewed) {
    unreviewed.checked = !unreviewed.checked;
    apply({ unreviewed: unreviewed.checked });
  } else if (event.key === "n" && nondiagnostic) {
    nondiagnostic.checked = !nondiagnostic.checked;
    apply({ nondiagnostic: nondiagnostic.checked });
  } else return;
  event.preventDefault();
});

const refreshSoon = coalesce(() => void refresh(true), 400);
function onEvent(event: ArtiscanEvent): void {
  if (eventsList && event.kind !== "subscribed") {
    const item = document.createElement("li");
    item.textContent = `${new Date().toLocaleTimeString()} ${event.kind}`;
    eventsList.prepend(item);
    while (eventsList.children.length > 20) eventsList.lastElementChild?.remove();
  }
  if (worklistCares(event)) refreshSoon();
}

fillForm();
void loadSites();
void refresh();
connectEvents(onEvent, (state) => {
  if (live) {
    live.dataset.state = state;
    live.textContent = state === "open" ? "live" : state;
  }
  if (state === "open") refreshSoon(); // catch up on what happened while disconnected
});
