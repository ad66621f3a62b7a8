// Our own DICOMweb (/dicomweb/): the viewer reads series metadata and frames from it, exactly as
// any DICOMweb client (OHIF included) would.

export type DicomJson = Record<string, { vr: string; Value?: unknown[] }>;

export const DICOMWEB_ROOT = `${window.location.origin}/dicomweb`;

export function value<T = unknown>(item: DicomJson, tag: string): T | undefined {
  const values = item[tag]?.Value;
  return values && values.length ? (values[0] as T) : undefined;
}

/** A request the page started before its scripts loaded (an inline script in the viewer's
 * template: `window.artiscanPreload = {url: ..., response: fetch(url, ...)}`), taken once. */
function preloaded(url: string): Promise<Response> | null {
  const holder = window as { artiscanPreload?: { url: string; response: Promise<Response> } | null };
  const early = holder.artiscanPreload;
  if (!early || new URL(early.url, window.location.href).href !== url) return null;
  holder.artiscanPreload = null;
  return early.response;
}

export async function seriesMetadata(studyUid: string, seriesUid: string): Promise<DicomJson[]> {
  const url = `${DICOMWEB_ROOT}/studies/${studyUid}/series/${seriesUid}/metadata`;
  const response = await (preloaded(url) ?? fetch(url, {
    credentials: "same-origin",
    headers: { Accept: "application/dicom+json" },
  }));
  if (!response.ok) {
    const why: Record<number, string> = {
      401: "your session has ended; sign in again.",
      403: "you are not allowed to see it.",
      404: "this series does not exist or is not yours to see.",
    };
    throw new Error(why[response.status] ?? (response.status >= 500
      ? `the server could not read its images (HTTP ${response.status}).`
      : `HTTP ${response.status}`));
  }
  const items = (await response.json()) as DicomJson[];
  return items.sort((a, b) => (value<number>(a, "00200013") ?? 0) - (value<number>(b, "00200013") ?? 0));
}

export function frameImageId(studyUid: string, seriesUid: string, item: DicomJson, frame = 1): string {
  const sop = value<string>(item, "00080018");
  return `wadors:${DICOMWEB_ROOT}/studies/${studyUid}/series/${seriesUid}/instances/${sop}/frames/${frame}`;
}

/** How many frames an instance holds: NumberOfFrames of a multi-frame (Enhanced MR) image, 1
 * for a classic one. */
export function frameCount(item: DicomJson): number {
  const count = Math.floor(Number(value(item, "00280008") ?? 1));
  return Number.isFinite(count) && count > 1 ? count : 1;
}

const shared = new Map<string, Promise<DicomJson[]>>();

/** The series' metadata, one request per page load for every module that asks (the first-image
 * preview and the viewer); a failed request is not kept. */
export function seriesMetadataShared(studyUid: string, seriesUid: string): Promise<DicomJson[]> {
  const key = `${studyUid}/${seriesUid}`;
  let pending = shared.get(key);
  if (!pending) {
    pending = seriesMetadata(studyUid, seriesUid);
    shared.set(key, pending);
    pending.catch(() => shared.delete(key));
  }
  return pending;
}
