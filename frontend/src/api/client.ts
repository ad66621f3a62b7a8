// The project's REST API, with the session cookie (browser) and CSRF token for writes.

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
  series_uid: string;
  series_number: number | null;
  description: string;
  protocol: string;
  status: string;
  instance_count: number;
  suitability: number | null;
  received_at: string;
}

export class ApiError extends Error {
  constructor(public status: number, message: string) {
    super(message);
  }
}

export async function getJson<T>(path: string): Promise<T> {
  const response = await fetch(path, {
    credentials: "same-origin",
    headers: { Accept: "application/json" },
  });
  if (!response.ok) {
    throw new ApiError(response.status, `${path}: HTTP ${response.status}`);
  }
  return (await response.json()) as T;
}

export function seriesList(limit = 100): Promise<Page<SeriesRow>> {
  return getJson<Page<SeriesRow>>(`/api/series/?modality=MR&limit=${limit}`);
}
