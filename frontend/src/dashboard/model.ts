// Pure helpers of the dashboard page (no DOM, no Chart.js): filters → query strings, weeks,
// heat-map colours and the trend series with their confidence band. Unit-tested in model.test.ts.

import { artifactColour } from "../common/artifacts";

export interface Filters {
  site: string; // "" = all of the caller's QA sites
  weeks: number;
  metric: string; // "nondiagnostic" or an artifact type
}

export interface Row {
  [key: string]: string | number | boolean | null;
}

export interface Table<R = Row> {
  columns: string[];
  rows: R[];
  count?: number;
}

/** Monday (UTC) of the ISO week containing ``day``, as YYYY-MM-DD. */
export function mondayOf(day: Date): string {
  const d = new Date(Date.UTC(day.getUTCFullYear(), day.getUTCMonth(), day.getUTCDate()));
  const shift = (d.getUTCDay() + 6) % 7; // Monday = 0
  d.setUTCDate(d.getUTCDate() - shift);
  return d.toISOString().slice(0, 10);
}

export function addWeeks(isoDate: string, weeks: number): string {
  const d = new Date(`${isoDate}T00:00:00Z`);
  d.setUTCDate(d.getUTCDate() + 7 * weeks);
  return d.toISOString().slice(0, 10);
}

/** The query of every table for these filters (``extra`` adds or overrides parameters). */
export function query(filters: Filters, today: Date, extra: Record<string, string> = {}): string {
  const weekTo = mondayOf(today);
  const params = new URLSearchParams({
    week_from: addWeeks(weekTo, -(filters.weeks - 1)),
    week_to: weekTo,
  });
  if (filters.site) params.set("site", filters.site);
  for (const [key, value] of Object.entries(extra)) params.set(key, value);
  return params.toString();
}

export function metricLabel(metric: string): string {
  return metric === "nondiagnostic" ? "non-diagnostic" : metric.replace("_", " ");
}

/** The colour of a metric: the product's artifact palette, a neutral white for non-diagnostic. */
export function metricColour(metric: string, alpha = 1): string {
  return metric === "nondiagnostic" ? `rgba(230, 237, 243, ${alpha})` : artifactColour(metric, alpha);
}

/** A heat-map cell: the artifact's colour, more opaque the higher the rate (relative to the
 *  highest rate of that artifact across scanners, with a floor so small rates stay visible). */
export function heatColour(metric: string, rate: number | null, columnMax: number): string {
  if (rate === null || rate <= 0) return "transparent";
  const alpha = 0.15 + 0.85 * Math.min(1, rate / Math.max(columnMax, 1e-9));
  return metricColour(metric, Number(alpha.toFixed(3)));
}

export function percent(value: number | null | undefined, digits = 1): string {
  return value === null || value === undefined ? "—" : `${(100 * value).toFixed(digits)} %`;
}

export interface TrendSeries {
  labels: string[];
  rate: (number | null)[];
  low: (number | null)[];
  high: (number | null)[];
  series: number[];
}

/** The weekly rate of ``metric`` with its 95 % interval, from the trend table's rows. */
export function trendSeries(rows: Row[], metric: string): TrendSeries {
  const pick = (row: Row, key: string): number | null => {
    const value = row[`${metric}_${key}`];
    return typeof value === "number" ? value : null;
  };
  return {
    labels: rows.map((r) => String(r.week)),
    rate: rows.map((r) => pick(r, "rate")),
    low: rows.map((r) => pick(r, "low")),
    high: rows.map((r) => pick(r, "high")),
    series: rows.map((r) => Number(r.series ?? 0)),
  };
}
