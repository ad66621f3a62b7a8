// The site-quality dashboard: trends with confidence bands, worst protocols and scanners, the
// scanner × artifact heat map, alerts to acknowledge, CSV/PDF exports, and drill-down from any
// point, bar or cell to the series behind it and on to the viewer.

import {
  BarController,
  BarElement,
  CategoryScale,
  Chart,
  Filler,
  Legend,
  LinearScale,
  LineController,
  LineElement,
  PointElement,
  Tooltip,
  type ActiveElement,
  type ChartConfiguration,
  type ChartEvent,
  type ChartType,
} from "chart.js";

import { ARTIFACT_TYPES } from "../common/artifacts";
import {
  heatColour,
  metricColour,
  metricLabel,
  percent,
  query,
  trendSeries,
  type Filters,
  type Row,
  type Table,
} from "./model";

Chart.register(
  BarController, BarElement, CategoryScale, Filler, Legend, LinearScale, LineController,
  LineElement, PointElement, Tooltip,
);
Chart.defaults.color = "#8b98a5";
Chart.defaults.borderColor = "#2a3642";
Chart.defaults.animation = false; // drawn at once: a dashboard, not a show

const $ = <T extends HTMLElement>(selector: string): T => {
  const element = document.querySelector<T>(selector);
  if (!element) throw new Error(`missing ${selector}`);
  return element;
};

const root = $<HTMLElement>("#dashboard");
const status = $<HTMLElement>("#dash-status");
const siteSelect = $<HTMLSelectElement>("#f-site");
const weeksSelect = $<HTMLSelectElement>("#f-weeks");
const metricSelect = $<HTMLSelectElement>("#f-metric");
const monthInput = $<HTMLInputElement>("#f-month");
const charts = new Map<string, { destroy(): void }>();

function filters(): Filters {
  return { site: siteSelect.value, weeks: Number(weeksSelect.value), metric: metricSelect.value };
}

function csrfToken(): string {
  const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
  return match ? decodeURIComponent(match[1]) : "";
}

async function getTable<R = Row>(path: string, extra: Record<string, string> = {}): Promise<Table<R>> {
  const response = await fetch(`/api/dashboards/${path}/?${query(filters(), new Date(), extra)}`, {
    credentials: "same-origin",
    headers: { Accept: "application/json" },
  });
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return (await response.json()) as Table<R>;
}

function text(tag: string, content: string, className?: string): HTMLElement {
  const element = document.createElement(tag);
  element.textContent = content; // never innerHTML: protocol names come from DICOM headers
  if (className) element.className = className;
  return element;
}

function draw<T extends ChartType, D>(id: string, config: ChartConfiguration<T, D>): Chart<T, D> {
  charts.get(id)?.destroy();
  const canvas = $<HTMLCanvasElement>(`#${id}`);
  const chart = new Chart<T, D>(canvas, config);
  charts.set(id, chart);
  const points = config.data.datasets.reduce((n, d) => n + (d.data as unknown[]).length, 0);
  canvas.dataset.points = String(points);
  canvas.dataset.labels = JSON.stringify(config.data.labels ?? []);
  canvas.dataset.drawn = "true";
  return chart;
}

// --- drill-down -------------------------------------------------------------------------------

interface SeriesRow {
  id: string;
  viewer_url: string;
  received_at: string;
  scanner: string;
  protocol: string;
  series_number: number | null;
  description: string;
  instance_count: number;
  suitability: number | null;
}

async function drilldown(title: string, params: Record<string, string>): Promise<void> {
  const section = $<HTMLElement>("#drilldown");
  const body = $<HTMLTableSectionElement>("#drilldown-table tbody");
  section.hidden = false;
  $<HTMLElement>("#drilldown-title").textContent = title;
  body.replaceChildren(text("tr", "Loading…", "empty"));
  const table = await getTable<SeriesRow>("series", params);
  body.replaceChildren();
  for (const row of table.rows) {
    const tr = document.createElement("tr");
    tr.dataset.seriesId = row.id;
    const link = document.createElement("a");
    link.href = row.viewer_url;
    link.textContent = `${row.series_number ?? ""} ${row.description}`.trim() || row.id.slice(0, 8);
    const linkCell = document.createElement("td");
    linkCell.append(link);
    const suit = text("td", row.suitability === null ? "—" : row.suitability.toFixed(2));
    if (row.suitability !== null) {
      suit.className = row.suitability < 0.5 ? "suit-bad" : row.suitability < 0.8 ? "suit-warn" : "suit-ok";
    }
    tr.append(
      text("td", new Date(row.received_at).toLocaleString()),
      text("td", row.scanner),
      text("td", row.protocol),
      linkCell,
      text("td", String(row.instance_count)),
      suit,
    );
    body.append(tr);
  }
  const count = table.count ?? table.rows.length;
  $<HTMLElement>("#drilldown-more").textContent =
    count > table.rows.length ? `${table.rows.length} of ${count} series shown.` : `${count} series.`;
  section.scrollIntoView({ block: "start" });
}

// --- trend --------------------------------------------------------------------------------------

async function drawTrend(): Promise<void> {
  const metric = filters().metric;
  const table = await getTable("trend");
  const t = trendSeries(table.rows, metric);
  const colour = metricColour(metric);
  draw("trend-chart", {
    type: "line",
    data: {
      labels: t.labels,
      datasets: [
        { label: "95 % low", data: t.low, borderWidth: 0, pointRadius: 0, fill: false, spanGaps: true },
        {
          label: "95 % interval",
          data: t.high,
          borderWidth: 0,
          pointRadius: 0,
          backgroundColor: metricColour(metric, 0.2),
          fill: "-1",
          spanGaps: true,
        },
        {
          label: `${metricLabel(metric)} rate`,
          data: t.rate,
          borderColor: colour,
          backgroundColor: colour,
          pointRadius: 4,
          pointHoverRadius: 7,
          spanGaps: true,
        },
      ],
    },
    options: {
      maintainAspectRatio: false,
      interaction: { mode: "index", intersect: false },
      scales: { y: { min: 0, ticks: { callback: (v) => percent(Number(v), 0) } } },
      plugins: {
        legend: { labels: { filter: (item) => item.text !== "95 % low" } },
        tooltip: {
          callbacks: {
            label: (ctx) =>
              ctx.datasetIndex === 2
                ? `${metricLabel(metric)}: ${percent(ctx.parsed.y)} of ${t.series[ctx.dataIndex]} series (95 % ${percent(t.low[ctx.dataIndex])}–${percent(t.high[ctx.dataIndex])})`
                : "",
          },
        },
      },
      onClick: (_e: ChartEvent, elements: ActiveElement[]) => {
        if (!elements.length) return;
        const week = t.labels[elements[0].index];
        void drilldown(`${metricLabel(metric)} in the week of ${week}`, { week, metric });
      },
    },
  });
}

// --- worst protocols and scanners ------------------------------------------------------------------

async function drawWorst(by: "protocol" | "scanner", canvasId: string): Promise<void> {
  const metric = filters().metric;
  const table = await getTable("worst", { by, metric, min_series: "3" });
  const rows = table.rows;
  draw<"bar", (number | [number, number])[]>(canvasId, {
    type: "bar",
    data: {
      labels: rows.map((r) => String(r.label)),
      datasets: [
        {
          label: `${metricLabel(metric)} rate`,
          data: rows.map((r) => Number(r.rate)),
          backgroundColor: metricColour(metric, 0.75),
          grouped: false,
          order: 2,
        },
        {
          label: "95 % interval",
          data: rows.map((r) => [Number(r.low), Number(r.high)] as [number, number]),
          backgroundColor: "rgba(139, 152, 165, 0.55)",
          barPercentage: 0.3,
          grouped: false,
          order: 1,
        },
      ],
    },
    options: {
      indexAxis: "y",
      maintainAspectRatio: false,
      scales: { x: { min: 0, ticks: { callback: (v) => percent(Number(v), 0) } } },
      plugins: {
        tooltip: {
          callbacks: {
            label: (ctx) => {
              const r = rows[ctx.dataIndex];
              return `${percent(Number(r.rate))} of ${r.series} series (95 % ${percent(Number(r.low))}–${percent(Number(r.high))})`;
            },
          },
        },
      },
      onClick: (_e: ChartEvent, elements: ActiveElement[]) => {
        if (!elements.length) return;
        const r = rows[elements[0].index];
        const params: Record<string, string> = { metric, site: String(r.site_id) };
        if (by === "scanner" && r.scanner_id !== null) params.scanner = String(r.scanner_id);
        if (by === "protocol") params.protocol = String(r.protocol);
        void drilldown(`${metricLabel(metric)} · ${r.label}`, params);
      },
    },
  });
}

// --- heat map -----------------------------------------------------------------------------------

async function drawHeatmap(): Promise<void> {
  const table = await getTable("heatmap");
  const element = $<HTMLTableElement>("#heatmap");
  element.replaceChildren();
  const metrics = ["nondiagnostic", ...ARTIFACT_TYPES];
  const head = document.createElement("thead");
  const headRow = document.createElement("tr");
  headRow.append(text("th", "Scanner"), text("th", "Series"));
  for (const m of metrics) headRow.append(text("th", metricLabel(m)));
  head.append(headRow);
  const body = document.createElement("tbody");
  if (table.rows.length === 0) {
    const tr = document.createElement("tr");
    tr.className = "empty";
    const td = text("td", "No scored series in these weeks.");
    (td as HTMLTableCellElement).colSpan = metrics.length + 2;
    tr.append(td);
    body.append(tr);
  }
  const columnMax = Object.fromEntries(
    metrics.map((m) => [m, Math.max(0, ...table.rows.map((r) => Number(r[`${m}_rate`] ?? 0)))]),
  );
  for (const row of table.rows) {
    const tr = document.createElement("tr");
    tr.append(text("th", `${row.scanner} · ${row.site}`, "row"), text("td", String(row.series)));
    for (const m of metrics) {
      const rate = row[`${m}_rate`] as number | null;
      const td = text("td", percent(rate, 0), "cell");
      td.style.background = heatColour(m, rate, columnMax[m]);
      if (rate !== null && rate > 0) td.classList.add("hot");
      td.dataset.metric = m;
      td.dataset.scanner = String(row.scanner_id ?? "");
      td.title = `${metricLabel(m)} on ${row.scanner}: ${percent(rate)} of ${row.series} series`;
      td.addEventListener("click", () => {
        const params: Record<string, string> = { metric: m, site: String(row.site_id) };
        if (row.scanner_id !== null) params.scanner = String(row.scanner_id);
        void drilldown(`${metricLabel(m)} on ${row.scanner}`, params);
      });
      tr.append(td);
    }
    body.append(tr);
  }
  element.append(head, body);
  element.dataset.drawn = "true";
}

// --- summary table --------------------------------------------------------------------------------

async function drawSummary(): Promise<void> {
  const table = await getTable("summary");
  const element = $<HTMLTableElement>("#summary");
  element.replaceChildren();
  const columns: [string, string, (r: Row) => string][] = [
    ["Site", "site", (r) => String(r.site)],
    ["Scanner", "scanner", (r) => String(r.scanner)],
    ["Protocol", "protocol", (r) => String(r.protocol)],
    ["Family", "sequence_family", (r) => String(r.sequence_family)],
    ["Series", "series", (r) => String(r.series)],
    ["Non-diag.", "nondiagnostic_rate", (r) => percent(r.nondiagnostic_rate as number | null)],
    ...ARTIFACT_TYPES.map(
      (a) => [metricLabel(a), `${a}_rate`, (r: Row) => percent(r[`${a}_rate`] as number | null, 0)] as [string, string, (r: Row) => string],
    ),
    ["Suit.", "mean_suitability", (r) => (r.mean_suitability === null ? "—" : Number(r.mean_suitability).toFixed(2))],
    ["Repeat", "repeat_rate", (r) => percent(r.repeat_rate as number | null)],
    ["Verdict", "mean_verdict_s", (r) => (r.mean_verdict_s === null ? "—" : `${Number(r.mean_verdict_s).toFixed(2)} s`)],
  ];
  const head = document.createElement("thead");
  const headRow = document.createElement("tr");
  for (const [label] of columns) headRow.append(text("th", label));
  head.append(headRow);
  const body = document.createElement("tbody");
  for (const row of table.rows) {
    const tr = document.createElement("tr");
    for (const [, key, format] of columns) {
      const td = text("td", format(row));
      if (key === "protocol") {
        td.className = "link";
        const link = document.createElement("a");
        link.href = "#drilldown";
        link.textContent = format(row);
        link.addEventListener("click", (event) => {
          event.preventDefault();
          const params: Record<string, string> = {
            site: String(row.site_id),
            protocol: String(row.protocol),
            sequence_family: String(row.sequence_family),
          };
          if (row.scanner_id !== null) params.scanner = String(row.scanner_id);
          void drilldown(`${row.protocol} on ${row.scanner}`, params);
        });
        td.replaceChildren(link);
      }
      tr.append(td);
    }
    body.append(tr);
  }
  element.append(head, body);
}

// --- alerts -----------------------------------------------------------------------------------------

interface AlertRow {
  id: number;
  site_id: number;
  site: string;
  scanner_id: number | null;
  scanner: string;
  metric: string;
  week: string;
  count: number;
  total: number;
  rate: number;
  baseline_rate: number;
  baseline_weeks: number;
  p_value: number;
  /** What a jump of this rate most likely points at (a spike rate: hardware); "" if unknown. */
  likely_cause?: string;
  acknowledged_by: string | null;
  acknowledged_at: string | null;
  /** A recount (findings rejected, a rollback) took the jump away. */
  withdrawn_at?: string | null;
}

async function acknowledge(id: number, kind: "alerts" | "access-alerts" = "alerts"): Promise<void> {
  const response = await fetch(`/api/dashboards/${kind}/${id}/acknowledge/`, {
    method: "POST",
    credentials: "same-origin",
    headers: { "X-CSRFToken": csrfToken(), Accept: "application/json" },
  });
  if (!response.ok) throw new Error(`acknowledge: HTTP ${response.status}`);
  await (kind === "alerts" ? drawAlerts() : drawAccessAlerts());
}

/** The acknowledgement of an alert, or the button that makes it. */
function acknowledgement(
  row: { id: number; acknowledged_by: string | null; acknowledged_at: string | null },
  kind: "alerts" | "access-alerts",
): HTMLElement {
  if (row.acknowledged_at) {
    return text("span", `acknowledged by ${row.acknowledged_by} ${new Date(row.acknowledged_at).toLocaleString()}`, "ack");
  }
  const button = document.createElement("button");
  button.type = "button";
  button.textContent = "Acknowledge";
  button.addEventListener("click", () => {
    button.disabled = true;
    acknowledge(row.id, kind).catch((error) => {
      button.disabled = false;
      status.textContent = String(error);
    });
  });
  return button;
}

async function drawAlerts(): Promise<void> {
  const table = await getTable<AlertRow>("alerts");
  const list = $<HTMLUListElement>("#alerts");
  list.replaceChildren();
  if (table.rows.length === 0) list.append(text("li", "No alerts for these sites.", "muted"));
  for (const alert of table.rows) {
    const item = document.createElement("li");
    item.dataset.alertId = String(alert.id);
    item.className = alert.acknowledged_at ? "acked" : alert.withdrawn_at ? "withdrawn" : "open";
    const what = document.createElement("a");
    what.href = "#drilldown";
    what.className = "what";
    what.textContent =
      `${metricLabel(alert.metric)} on ${alert.scanner} (${alert.site}), week of ${alert.week}: ` +
      `${alert.count}/${alert.total} = ${percent(alert.rate)} vs ${percent(alert.baseline_rate)} ` +
      `over ${alert.baseline_weeks} weeks (p = ${alert.p_value.toExponential(1)})`;
    what.addEventListener("click", (event) => {
      event.preventDefault();
      const params: Record<string, string> = { site: String(alert.site_id), week: alert.week, metric: alert.metric };
      if (alert.scanner_id !== null) params.scanner = String(alert.scanner_id);
      void drilldown(`${metricLabel(alert.metric)} on ${alert.scanner}, week of ${alert.week}`, params);
    });
    item.append(what);
    if (alert.likely_cause) item.append(text("span", ` — ${alert.likely_cause}`, "cause"));
    if (alert.withdrawn_at && !alert.acknowledged_at) {
      item.append(text("span", `withdrawn after a recount ${new Date(alert.withdrawn_at).toLocaleString()}`, "ack"));
    } else {
      item.append(acknowledgement(alert, "alerts"));
    }
    list.append(item);
  }
}

// --- files refused at the door ----------------------------------------------------------------------

const SOURCES: Record<string, string> = { upload: "upload page", stow: "STOW-RS", cstore: "C-STORE", orthanc: "Orthanc" };

async function drawRefused(): Promise<void> {
  const table = await getTable("refused");
  const element = $<HTMLTableElement>("#refused");
  element.replaceChildren();
  const head = document.createElement("thead");
  const headRow = document.createElement("tr");
  for (const label of ["Site", "Way in", "Reason", "Files", "Last"]) headRow.append(text("th", label));
  head.append(headRow);
  const body = document.createElement("tbody");
  if (table.rows.length === 0) {
    const tr = document.createElement("tr");
    tr.className = "empty";
    const td = text("td", "No file was refused in these weeks.", "muted");
    (td as HTMLTableCellElement).colSpan = 5;
    tr.append(td);
    body.append(tr);
  }
  for (const row of table.rows) {
    const tr = document.createElement("tr");
    tr.append(
      text("td", String(row.site)),
      text("td", SOURCES[String(row.source)] ?? String(row.source)),
      text("td", String(row.reason)), // reasons never quote a header value
      text("td", String(row.files)),
      text("td", new Date(String(row.last_at)).toLocaleString()),
    );
    body.append(tr);
  }
  element.append(head, body);
}

// --- access alerts: bursts of denied attempts on a site's data ---------------------------------------

interface AccessAlertRow {
  id: number;
  site: string;
  username: string;
  attempts: number;
  first_at: string;
  last_at: string;
  source_ips: string;
  acknowledged_by: string | null;
  acknowledged_at: string | null;
}

async function drawAccessAlerts(): Promise<void> {
  const table = await getTable<AccessAlertRow>("access-alerts");
  const list = $<HTMLUListElement>("#access-alerts");
  list.replaceChildren();
  if (table.rows.length === 0) list.append(text("li", "No bursts of denied access.", "muted"));
  for (const alert of table.rows) {
    const item = document.createElement("li");
    item.dataset.alertId = String(alert.id);
    item.className = alert.acknowledged_at ? "acked" : "open";
    const first = new Date(alert.first_at);
    const what = text(
      "span",
      `${alert.username} was refused ${alert.attempts} times on ${alert.site} ` +
        `(${first.toLocaleString()} to ${new Date(alert.last_at).toLocaleTimeString()}` +
        `${alert.source_ips ? `, from ${alert.source_ips}` : ""})`,
      "what",
    );
    item.append(what, acknowledgement(alert, "access-alerts"));
    list.append(item);
  }
}

// --- alert delivery settings ------------------------------------------------------------------------

const settingsSite = $<HTMLSelectElement>("#s-site");
const settingsEmails = $<HTMLInputElement>("#s-emails");
const settingsWebhook = $<HTMLInputElement>("#s-webhook");
const settingsStatus = $<HTMLElement>("#s-status");

async function loadSettings(): Promise<void> {
  const response = await fetch(`/api/dashboards/sites/${settingsSite.value}/alert-settings/`, {
    credentials: "same-origin",
    headers: { Accept: "application/json" },
  });
  if (!response.ok) throw new Error(`alert settings: HTTP ${response.status}`);
  const body = (await response.json()) as { emails: string; webhook_url: string };
  settingsEmails.value = body.emails;
  settingsWebhook.value = body.webhook_url;
}

async function saveSettings(event: SubmitEvent): Promise<void> {
  event.preventDefault();
  settingsStatus.textContent = "Saving…";
  const response = await fetch(`/api/dashboards/sites/${settingsSite.value}/alert-settings/`, {
    method: "PUT",
    credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-CSRFToken": csrfToken(), Accept: "application/json" },
    body: JSON.stringify({ emails: settingsEmails.value, webhook_url: settingsWebhook.value }),
  });
  const body = (await response.json()) as Record<string, unknown>;
  settingsStatus.textContent = response.ok
    ? "Saved."
    : `Not saved: ${Object.entries(body).map(([k, v]) => `${k}: ${String(v)}`).join("; ")}`;
  settingsStatus.dataset.state = response.ok ? "saved" : "error";
}

settingsSite.addEventListener("change", () => void loadSettings());
$<HTMLFormElement>("#alert-settings-form").addEventListener("submit", (e) => void saveSettings(e));
void loadSettings().catch((error) => (settingsStatus.textContent = String(error)));

// --- exports and refresh -----------------------------------------------------------------------------

function updateExports(): void {
  for (const name of ["summary", "trend", "heatmap", "alerts", "refused"]) {
    $<HTMLAnchorElement>(`#csv-${name}`).href = `/api/dashboards/${name}/?${query(filters(), new Date(), { format: "csv" })}`;
  }
  $<HTMLAnchorElement>("#csv-worst").href =
    `/api/dashboards/worst/?${query(filters(), new Date(), { format: "csv", metric: filters().metric })}`;
  const site = siteSelect.value || siteSelect.options[siteSelect.options.length - 1]?.value || "";
  const pdf = $<HTMLAnchorElement>("#pdf-report");
  pdf.href = `/api/dashboards/report.pdf?site=${encodeURIComponent(site)}&month=${monthInput.value}`;
}

async function refresh(): Promise<void> {
  root.dataset.state = "loading";
  status.textContent = "Loading…";
  updateExports();
  try {
    await Promise.all([
      drawTrend(),
      drawWorst("protocol", "worst-protocols"),
      drawWorst("scanner", "worst-scanners"),
      drawHeatmap(),
      drawSummary(),
      drawAlerts(),
      drawAccessAlerts(),
      drawRefused(),
    ]);
    root.dataset.state = "ready";
    status.textContent = `Updated ${new Date().toLocaleTimeString()}`;
  } catch (error) {
    root.dataset.state = "error";
    status.textContent = `Could not load the dashboard: ${String(error)}`;
  }
}

const params = new URLSearchParams(window.location.search);
if (params.get("site")) siteSelect.value = params.get("site") ?? "";
monthInput.value = new Date().toISOString().slice(0, 7);
for (const input of [siteSelect, weeksSelect, metricSelect]) input.addEventListener("change", () => void refresh());
monthInput.addEventListener("change", updateExports);
void refresh();
