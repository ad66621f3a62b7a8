// The project's REST API, with the session cookie (browser) and the CSRF token for writes.
// Errors carry the server's own explanation (DRF's "detail" or field messages) so pages can say
// why something failed.

export interface Page<T> {
  count: number;
  next: string | null;
  previous: string | null;
  results: T[];
}

export interface SeriesRow {
  id: string;
  study_id: string;
  site_id: number;
  site_name: string;
  series_uid: string;
  series_number: number | null;
  modality: string;
  description: string;
  protocol: string;
  sequence_family: string;
  status: string;
  instance_count: number;
  /** Slices: the instances' frames (an Enhanced MR instance holds many). */
  slice_count?: number;
  suitability: number | null;
  suitability_index: number | null;
  nondiagnostic: boolean | null;
  dominant_artifact: string | null;
  verdict: "diagnostic" | "nondiagnostic" | null;
  scanner: string | null;
  received_at: string;
}

export interface WorklistQuery {
  site?: number | null;
  received_from?: string;
  received_to?: string;
  q?: string;
  nondiagnostic?: boolean;
  unreviewed?: boolean;
  ordering?: string;
  limit?: number;
  offset?: number;
}

export interface FindingResult {
  id: number;
  artifact_type: string;
  mask_url: string | null;
  area_px: number;
  area_mm2: number | null;
  head_fraction: number;
  bbox: number[];
  confidence: number;
  advice: string;
  review_state: "pending" | "accepted" | "corrected" | "rejected";
}

export interface InstanceResult {
  instance_id: string;
  sop_uid: string;
  instance_number: number | null;
  /** 1-based; an Enhanced MR instance has one result per frame. */
  frame: number;
  frame_count: number;
  suitability_index: number;
  nondiagnostic: boolean;
  reason: string;
  findings: FindingResult[];
  roi_suitability_index?: number | null;
}

/** The slice a result is for, as the viewer keys its stack positions: the SOP Instance UID,
 * with `/frames/N` for a frame of a multi-frame instance. */
export function resultKey(result: Pick<InstanceResult, "sop_uid" | "frame" | "frame_count">): string {
  return result.frame_count > 1 ? `${result.sop_uid}/frames/${result.frame}` : result.sop_uid;
}

export interface RoiResult {
  polygon: [number, number][];
  first_instance: number | null;
  last_instance: number | null;
  /** Only this frame of the instances in range (a slice of an Enhanced MR instance). */
  frame?: number | null;
}

export interface SeriesResult {
  series_id: string;
  status: string;
  model: string | null;
  suitability_index: number | null;
  reason: string;
  instances: InstanceResult[];
  roi?: RoiResult | null;
  roi_suitability_index?: number | null;
  roi_reason?: string;
  quarantined?: { sop_uid: string; instance_number: number | null; attempts: number; reason: string }[];
}

export interface FindingReview {
  id: number;
  finding_id: number;
  action: "accept" | "correct" | "reject";
  comment: string;
  user: string;
  created_at: string;
  mask_url: string | null;
  mask_area_px: number | null;
}

export interface SeriesVerdict {
  id: number;
  verdict: "diagnostic" | "nondiagnostic";
  comment: string;
  user: string;
  created_at: string;
}

export interface SeriesReviewSummary {
  series_id: string;
  verdict: "diagnostic" | "nondiagnostic" | null;
  verdicts: SeriesVerdict[];
  findings: Record<string, FindingReview[]>;
}

export class ApiError extends Error {
  constructor(
    public status: number,
    message: string,
  ) {
    super(message);
  }
}

/** The CSRF token Django put in the page (a `{% csrf_token %}` input) or its cookie. */
export function csrfToken(doc: Document = document): string {
  const input = doc.querySelector<HTMLInputElement>("input[name=csrfmiddlewaretoken]");
  if (input?.value) return input.value;
  const match = /(?:^|;\s*)csrftoken=([^;]+)/.exec(doc.cookie);
  return match ? decodeURIComponent(match[1]) : "";
}

/** A readable message from an error response: DRF's `detail`, else the first field message. */
export async function errorMessage(response: Response): Promise<string> {
  let text = "";
  try {
    text = await response.text();
    const body = JSON.parse(text) as unknown;
    if (body && typeof body === "object") {
      const record = body as Record<string, unknown>;
      if (typeof record.detail === "string") return record.detail;
      for (const [field, value] of Object.entries(record)) {
        const first = Array.isArray(value) ? value[0] : value;
        if (typeof first === "string") return field === "non_field_errors" ? first : `${field}: ${first}`;
      }
    }
  } catch {
    // not JSON: fall through to the status line
  }
  if (response.status === 404) return "Not found (or not yours to see).";
  return `HTTP ${response.status}${text && text.length < 200 ? `: ${text}` : ""}`;
}

/** A request the page makes by itself (a reload on a live event), not one a person asked for:
 * the server does not count it as use of the session, so a page left open on a busy site still
 * signs out when nobody uses it. */
export interface Background {
  background?: boolean;
}

export async function getJson<T>(path: string, { background = false }: Background = {}): Promise<T> {
  const headers: Record<string, string> = { Accept: "application/json" };
  if (background) headers["X-ArtiScan-Background"] = "1";
  const response = await fetch(path, { credentials: "same-origin", headers });
  if (!response.ok) throw new ApiError(response.status, await errorMessage(response));
  return (await response.json()) as T;
}

export async function sendJson<T>(method: "POST" | "PUT" | "DELETE", path: string, body?: unknown): Promise<T> {
  const headers: Record<string, string> = { Accept: "application/json", "X-CSRFToken": csrfToken() };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method,
    credentials: "same-origin",
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (!response.ok) throw new ApiError(response.status, await errorMessage(response));
  if (response.status === 204) return undefined as T;
  const text = await response.text();
  return (text ? JSON.parse(text) : undefined) as T;
}

/** The worklist's query string: only the filters that are set, MR series only. */
export function worklistQuery(query: WorklistQuery): string {
  const params = new URLSearchParams({ modality: "MR" });
  if (query.site) params.set("site", String(query.site));
  if (query.received_from) params.set("received_from", query.received_from);
  if (query.received_to) params.set("received_to", query.received_to);
  if (query.q?.trim()) params.set("q", query.q.trim());
  if (query.nondiagnostic) params.set("nondiagnostic", "true");
  if (query.unreviewed) params.set("unreviewed", "true");
  if (query.ordering && query.ordering !== "received") params.set("ordering", query.ordering);
  params.set("limit", String(query.limit ?? 25));
  if (query.offset) params.set("offset", String(query.offset));
  return params.toString();
}

export function seriesList(query: WorklistQuery = {}, options: Background = {}): Promise<Page<SeriesRow>> {
  return getJson<Page<SeriesRow>>(`/api/series/?${worklistQuery(query)}`, options);
}

export function seriesResult(seriesId: string, options: Background = {}): Promise<SeriesResult> {
  return getJson<SeriesResult>(`/api/series/${seriesId}/result/`, options);
}

export function seriesReview(seriesId: string, options: Background = {}): Promise<SeriesReviewSummary> {
  return getJson<SeriesReviewSummary>(`/api/series/${seriesId}/review/`, options);
}

export function seriesVerdictSet(seriesId: string, verdict: "diagnostic" | "nondiagnostic", comment: string): Promise<SeriesVerdict> {
  return sendJson<SeriesVerdict>("POST", `/api/series/${seriesId}/review/`, { verdict, comment });
}

export function findingReview(
  findingId: number,
  action: "accept" | "reject" | "correct",
  options: { comment?: string; maskPngBase64?: string } = {},
): Promise<FindingReview> {
  const body: Record<string, string> = { action };
  if (options.comment) body.comment = options.comment;
  if (options.maskPngBase64) body.mask_png = options.maskPngBase64;
  return sendJson<FindingReview>("POST", `/api/findings/${findingId}/reviews/`, body);
}

export function roiSet(seriesId: string, roi: RoiResult): Promise<unknown> {
  return sendJson("PUT", `/api/series/${seriesId}/roi/`, roi);
}

export function roiClear(seriesId: string): Promise<unknown> {
  return sendJson("DELETE", `/api/series/${seriesId}/roi/`);
}

/** Base64 of a Blob's bytes (for JSON uploads of small PNG masks). */
export async function blobToBase64(blob: Blob): Promise<string> {
  const bytes = new Uint8Array(await blob.arrayBuffer());
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(binary);
}
