import { describe, expect, it } from "vitest";

import { addWeeks, heatColour, mondayOf, query, trendSeries } from "./model";

describe("dashboard model", () => {
  it("finds the Monday of an ISO week, Sundays included", () => {
    expect(mondayOf(new Date("2026-03-04T12:00:00Z"))).toBe("2026-03-02");
    expect(mondayOf(new Date("2026-03-08T23:00:00Z"))).toBe("2026-03-02");
    expect(mondayOf(new Date("2026-03-02T00:00:00Z"))).toBe("2026-03-02");
    expect(addWeeks("2026-03-02", -11)).toBe("2025-12-15");
  });

  it("builds the query of a range of weeks ending this week", () => {
    const q = new URLSearchParams(
      query({ site: "3", weeks: 12, metric: "spike" }, new Date("2026-03-04T12:00:00Z"), {
        format: "csv",
      }),
    );
    expect(q.get("week_from")).toBe("2025-12-15");
    expect(q.get("week_to")).toBe("2026-03-02");
    expect(q.get("site")).toBe("3");
    expect(q.get("format")).toBe("csv");
    expect(query({ site: "", weeks: 1, metric: "x" }, new Date("2026-03-04"))).not.toContain("site");
  });

  it("colours a heat-map cell by its rate with the artifact's colour", () => {
    expect(heatColour("spike", 0, 0.5)).toBe("transparent");
    expect(heatColour("spike", 0.5, 0.5)).toBe("rgba(240, 41, 168, 1)");
    expect(heatColour("spike", 0.25, 0.5)).toBe("rgba(240, 41, 168, 0.575)");
  });

  it("extracts a metric's rate and Wilson band from the trend rows", () => {
    const rows = [
      { week: "2026-03-02", series: 4, spike_rate: 0.5, spike_low: 0.15, spike_high: 0.85 },
      { week: "2026-03-09", series: 0, spike_rate: null, spike_low: null, spike_high: null },
    ];
    const t = trendSeries(rows, "spike");
    expect(t.labels).toEqual(["2026-03-02", "2026-03-09"]);
    expect(t.rate).toEqual([0.5, null]);
    expect(t.low).toEqual([0.15, null]);
    expect(t.high).toEqual([0.85, null]);
    expect(t.series).toEqual([4, 0]);
  });
});
