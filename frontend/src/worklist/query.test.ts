import { describe, expect, it } from "vitest";

import { badgeColour, readQuery, writeQuery } from "./query";

describe("worklist URL", () => {
  it("round-trips the filters", () => {
    const query = { q: "flair", site: 2, received_from: "2026-01-01", received_to: "2026-02-01", nondiagnostic: true, unreviewed: true, ordering: "-suitability", offset: 25 };
    expect(readQuery(writeQuery(query))).toEqual(query);
    expect(writeQuery({ ordering: "received" })).toBe("");
  });

  it("ignores junk in the URL", () => {
    expect(readQuery("?site=abc&offset=-5&nondiagnostic=yes")).toEqual({});
  });

  it("colours the index from red through amber to green", () => {
    expect(badgeColour(0)).toBe("hsl(0, 75%, 58%)");
    expect(badgeColour(50)).toBe("hsl(40, 75%, 50%)");
    expect(badgeColour(100)).toBe("hsl(120, 75%, 50%)");
    expect(badgeColour(150)).toBe(badgeColour(100));
  });
});
