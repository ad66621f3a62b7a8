// Worklist: the series of the user's sites, newest first, refreshed by live events.

import { seriesList, type SeriesRow } from "../api/client";
import { connectEvents, type ArtiscanEvent } from "../realtime/events";

const table = document.querySelector<HTMLTableSectionElement>("#worklist tbody");
const live = document.querySelector<HTMLElement>("#live");
const eventsList = document.querySelector<HTMLOListElement>("#events");

function suitabilityCell(value: number | null): HTMLTableCellElement {
  const cell = document.createElement("td");
  if (value === null) {
    cell.textContent = "—";
    return cell;
  }
  cell.textContent = value.toFixed(2);
  cell.className = value < 0.5 ? "suit-bad" : value < 0.8 ? "suit-warn" : "suit-ok";
  return cell;
}

function textCell(text: string): HTMLTableCellElement {
  const cell = document.createElement("td");
  cell.textContent = text; // never innerHTML: descriptions come from DICOM headers
  return cell;
}

function linkCell(text: string, href: string): HTMLTableCellElement {
  const cell = document.createElement("td");
  const link = document.createElement("a");
  link.href = href;
  link.textContent = text;
  cell.append(link);
  return cell;
}

function render(rows: SeriesRow[]): void {
  if (!table) return;
  table.replaceChildren();
  if (rows.length === 0) {
    const tr = document.createElement("tr");
    tr.className = "empty";
    const td = textCell("No series yet. Send images from the scanner or upload a series.");
    td.colSpan = 7;
    tr.append(td);
    table.append(tr);
    return;
  }
  for (const row of rows) {
    const tr = document.createElement("tr");
    tr.dataset.seriesId = row.id;
    tr.append(
      textCell(new Date(row.received_at).toLocaleString()),
      textCell(row.study_id.slice(0, 8)),
      linkCell(`${row.series_number ?? ""} ${row.description}`.trim(), `/series/${row.id}/`),
      textCell(row.protocol),
      textCell(String(row.instance_count)),
      textCell(row.status),
      suitabilityCell(row.suitability),
    );
    table.append(tr);
  }
}

async function refresh(): Promise<void> {
  try {
    render((await seriesList()).results);
  } catch (error) {
    if (table) table.replaceChildren(textCell(`Could not load the worklist: ${String(error)}`));
  }
}

function onEvent(event: ArtiscanEvent): void {
  if (eventsList) {
    const item = document.createElement("li");
    item.textContent = `${new Date().toLocaleTimeString()} ${event.kind}`;
    eventsList.prepend(item);
    while (eventsList.children.length > 20) eventsList.lastElementChild?.remove();
  }
  if (event.kind !== "subscribed") void refresh();
}

void refresh();
connectEvents(onEvent, (state) => {
  if (live) {
    live.dataset.state = state;
    live.textContent = state === "open" ? "live" : state;
  }
});
