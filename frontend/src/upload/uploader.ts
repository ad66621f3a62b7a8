// One file through the resumable upload API: create, PUT chunks at offsets, complete, follow.

export interface UploadResult {
  name: string;
  status: "accepted" | "duplicate" | "rejected";
  reason: string;
  series_id: string;
}

export interface UploadState {
  id: string;
  size: number;
  received: number;
  chunk_size: number;
  status: "receiving" | "queued" | "processing" | "done" | "failed";
  files_total: number;
  files_done: number;
  results: UploadResult[];
  error: string;
}

interface Options {
  site: string;
  csrf: string;
  onState: (state: UploadState) => void;
  retries?: number;
  /** Aborted: the upload is cancelled before its next chunk (its chunks deleted on the server). */
  signal?: AbortSignal;
}

export const CANCELLED = "cancelled by the sender";

/** Cancel an upload still receiving; what the server then says of it. */
async function cancel(state: UploadState, csrf: string): Promise<UploadState> {
  return json<UploadState>(await call(`/api/uploads/${state.id}/`, { method: "DELETE" }, csrf));
}

const sleep = (ms: number): Promise<void> => new Promise((r) => window.setTimeout(r, ms));

async function call(url: string, init: RequestInit, csrf: string): Promise<Response> {
  const headers = new Headers(init.headers);
  headers.set("X-CSRFToken", csrf);
  headers.set("Accept", "application/json");
  return fetch(url, { ...init, headers, credentials: "same-origin" });
}

async function json<T>(response: Response): Promise<T> {
  const body = (await response.json()) as T & { detail?: string };
  if (!response.ok && response.status !== 409) {
    throw new Error(body.detail ?? `HTTP ${response.status}`);
  }
  return body;
}

export async function sendFile(file: File, options: Options): Promise<UploadState> {
  const retries = options.retries ?? 8;
  let state = await json<UploadState>(
    await call("/api/uploads/", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ filename: file.name, size: file.size, site: options.site }),
    }, options.csrf),
  );
  options.onState(state);
  let failures = 0;
  while (state.received < state.size) {
    if (options.signal?.aborted) return cancel(state, options.csrf);
    const chunk = file.slice(state.received, state.received + state.chunk_size);
    try {
      const response = await call(`/api/uploads/${state.id}/chunk/?offset=${state.received}`, {
        method: "PUT",
        headers: { "Content-Type": "application/octet-stream" },
        body: chunk,
      }, options.csrf);
      const next = await json<UploadState & { received: number }>(response);
      // 409 answers with what the server has: go on from there (a resumed upload).
      state = response.status === 409 ? { ...state, received: next.received } : next;
      failures = 0;
    } catch (error) {
      failures += 1;
      if (failures > retries) {
        // Given up: cancel it, so its chunks do not hold the sender's upload quota for 48 hours.
        await cancel(state, options.csrf).catch(() => undefined);
        throw error;
      }
      await sleep(Math.min(500 * 2 ** failures, 10000));
      const current = await json<UploadState>(await call(`/api/uploads/${state.id}/`, {}, options.csrf));
      state = current;
    }
    options.onState(state);
  }
  // Cancelled while its last chunk was on the way: not handed over either.
  if (options.signal?.aborted) return cancel(state, options.csrf);
  state = await json<UploadState>(
    await call(`/api/uploads/${state.id}/complete/`, { method: "POST" }, options.csrf),
  );
  while (state.status === "queued" || state.status === "processing") {
    options.onState(state);
    await sleep(400);
    state = await json<UploadState>(await call(`/api/uploads/${state.id}/`, {}, options.csrf));
  }
  return state;
}
