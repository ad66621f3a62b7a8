// Upload page: files, folders or zips, sent in chunks that resume after a dropped connection,
// each with its own progress bar and per-file results.

import { CANCELLED, sendFile, type UploadState } from "./uploader";

const tbody = document.querySelector<HTMLTableSectionElement>("#uploads tbody");
const summary = document.querySelector<HTMLElement>("#summary");
const dropzone = document.querySelector<HTMLElement>("#dropzone");
const siteInput = document.querySelector<HTMLInputElement | HTMLSelectElement>("#site");
const csrf = document.querySelector<HTMLInputElement>("input[name=csrfmiddlewaretoken]")?.value ?? "";
const PARALLEL = 4;

const counts = { accepted: 0, duplicate: 0, rejected: 0, failed: 0, cancelled: 0 };

function updateSummary(): void {
  if (summary) {
    summary.textContent =
      `${counts.accepted} accepted · ${counts.duplicate} duplicate · ` +
      `${counts.rejected} rejected` + (counts.failed ? ` · ${counts.failed} failed` : "") +
      (counts.cancelled ? ` · ${counts.cancelled} cancelled` : "");
  }
}

interface Row {
  bar: HTMLProgressElement;
  result: HTMLTableCellElement;
  tr: HTMLTableRowElement;
  stop: HTMLButtonElement;
  controller: AbortController;
}

function row(name: string): Row {
  const tr = document.createElement("tr");
  const nameCell = document.createElement("td");
  nameCell.textContent = name;
  const barCell = document.createElement("td");
  const bar = document.createElement("progress");
  bar.max = 1;
  bar.value = 0;
  barCell.append(bar);
  const result = document.createElement("td");
  result.textContent = "waiting";
  // Cancel: before its next chunk the upload stops and its chunks are deleted on the server
  // (a file waiting its turn is simply not sent).
  const controller = new AbortController();
  const stopCell = document.createElement("td");
  const stop = document.createElement("button");
  stop.type = "button";
  stop.className = "cancel";
  stop.textContent = "Cancel";
  stop.setAttribute("aria-label", `Cancel ${name}`);
  stop.addEventListener("click", () => {
    controller.abort();
    stop.disabled = true;
    stop.textContent = "Cancelling";
  });
  stopCell.append(stop);
  tr.append(nameCell, barCell, result, stopCell);
  tbody?.append(tr);
  return { bar, result, tr, stop, controller };
}

function show(state: UploadState, view: Row): void {
  view.bar.value = state.size ? state.received / state.size : 0;
  if (state.status === "receiving") {
    view.result.textContent = `sending ${Math.round((100 * state.received) / Math.max(state.size, 1))} %`;
    return;
  }
  view.stop.hidden = true; // handed to the server: it finishes what it has
  if (state.status === "failed" && state.error === CANCELLED) {
    view.result.textContent = "cancelled";
    view.result.className = "result-cancelled";
    counts.cancelled += 1;
    return;
  }
  if (state.status === "queued" || state.status === "processing") {
    view.result.textContent = state.files_total > 1
      ? `de-identifying ${state.files_done} / ${state.files_total}` : "de-identifying";
    return;
  }
  if (state.status === "failed") {
    view.result.textContent = `failed: ${state.error}`;
    view.result.className = "result-failed";
    counts.failed += 1;
    return;
  }
  // done: one result per file (many for a zip)
  view.result.replaceChildren();
  for (const r of state.results) {
    const line = document.createElement("div");
    line.className = `result-${r.status}`;
    line.textContent = state.results.length > 1 ? `${r.name}: ${r.status}` : r.status;
    if (r.reason) line.textContent += ` — ${r.reason}`;
    view.result.append(line);
    counts[r.status] += 1;
  }
}

async function sendAll(files: File[]): Promise<void> {
  const queue = files.map((file) => ({ file, view: row(file.webkitRelativePath || file.name) }));
  const site = siteInput?.value ?? "";
  const worker = async (): Promise<void> => {
    for (let job = queue.shift(); job; job = queue.shift()) {
      const { file, view } = job;
      if (view.controller.signal.aborted) {
        view.result.textContent = "cancelled";
        view.result.className = "result-cancelled";
        view.stop.hidden = true;
        counts.cancelled += 1;
        updateSummary();
        continue;
      }
      try {
        const final = await sendFile(file, {
          site, csrf, signal: view.controller.signal, onState: (s) => show(s, view),
        });
        show(final, view);
      } catch (error) {
        view.result.textContent = `failed: ${String(error)}`;
        view.result.className = "result-failed";
        view.stop.hidden = true;
        counts.failed += 1;
      }
      updateSummary();
    }
  };
  await Promise.all(Array.from({ length: Math.min(PARALLEL, files.length) }, worker));
}

async function filesFromEntry(entry: FileSystemEntry): Promise<File[]> {
  if (entry.isFile) {
    return new Promise((resolve, reject) => (entry as FileSystemFileEntry).file((f) => resolve([f]), reject));
  }
  const reader = (entry as FileSystemDirectoryEntry).createReader();
  const all: File[] = [];
  for (;;) {
    const batch = await new Promise<FileSystemEntry[]>((resolve, reject) => reader.readEntries(resolve, reject));
    if (batch.length === 0) return all;
    for (const child of batch) all.push(...(await filesFromEntry(child)));
  }
}

for (const id of ["#files", "#folder"]) {
  document.querySelector<HTMLInputElement>(id)?.addEventListener("change", (event) => {
    const input = event.target as HTMLInputElement;
    void sendAll(Array.from(input.files ?? []));
    input.value = "";
  });
}

dropzone?.addEventListener("dragover", (event) => {
  event.preventDefault();
  dropzone.classList.add("over");
});
dropzone?.addEventListener("dragleave", () => dropzone.classList.remove("over"));
dropzone?.addEventListener("drop", (event) => {
  event.preventDefault();
  dropzone.classList.remove("over");
  const items = Array.from(event.dataTransfer?.items ?? []);
  const entries = items.map((i) => i.webkitGetAsEntry()).filter((e): e is FileSystemEntry => e !== null);
  void Promise.all(entries.map(filesFromEntry)).then((lists) => sendAll(lists.flat()));
});
