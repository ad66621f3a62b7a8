// Our own DICOMweb (/dicomweb/): the viewer reads series metadata and frames from it, exactly as
// any DICOMweb client (OHIF included) would.

export type DicomJson = Record<string, { vr: string; Value?: unknown[] }>;

export const DICOMWEB_ROOT = `${window.location.origin}/dicomweb`;

export function value<T = unknown>(item: DicomJson, tag: string): T | undefined {
  const values = item[tag]?.Value;
  return values && values.length ? (values[0] as T) : undefined;
}

export async function seriesMetadata(studyUid: string, seriesUid: string): Promise<DicomJson[]> {
  const url = `${DICOMWEB_ROOT}/studies/${studyUid}/series/${seriesUid}/metadata`;
  const response = await fetch(url, {
    credentials: "same-origin",
    headers: { Accept: "application/dicom+json" },
  });
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

export function frameImageId(studyUid: string, seriesUid: string, item: DicomJson): string {
  const sop = value<string>(item, "00080018");
  return `wadors:${DICOMWEB_ROOT}/studies/${studyUid}/series/${seriesUid}/instances/${sop}/frames/1`;
}
