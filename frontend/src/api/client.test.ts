// @vitest-environment jsdom
import { afterEach, describe, expect, it, vi } from "vitest";

import { ApiError, blobToBase64, csrfToken, errorMessage, findingReview, seriesList, sendJson, worklistQuery } from "./client";

type Call = { url: string; init: RequestInit };

function serve(status: number, body: unknown, calls: Call[]): void {
  vi.stubGlobal("fetch", async (url: string, init: RequestInit = {}) => {
    calls.push({ url, init });
    const text = typeof body === "string" ? body : JSON.stringify(body);
    return new Response(status === 204 ? null : text, { status, headers: { "Content-Type": "application/json" } });
  });
}

afterEach(() => {
  vi.unstubAllGlobals();
  document.body.innerHTML = "";
  document.cookie = "csrftoken=; expires=Thu, 01 Jan 1970 00:00:00 GMT";
});

describe("worklistQuery", () => {
  it("sends only the filters that are set, MR only, with a page size", () => {
    expect(worklistQuery({})).toBe("modality=MR&limit=25");
    expect(
      worklistQuery({ q: "  flair ", site: 3, nondiagnostic: true, unreviewed: false, ordering: "suitability", offset: 50, received_from: "2026-01-02" }),
    ).toBe("modality=MR&site=3&received_from=2026-01-02&q=flair&nondiagnostic=true&ordering=suitability&limit=25&offset=50");
  });

  it("leaves out the default ordering and a blank search", () => {
    expect(worklistQuery({ ordering: "received", q: "   ", limit: 10 })).toBe("modality=MR&limit=10");
  });
});

describe("csrfToken", () => {
  it("prefers the page's token and falls back to the cookie", () => {
    document.cookie = "csrftoken=from-cookie";
    expect(csrfToken()).toBe("from-cookie");
    document.body.innerHTML = '<input type="hidden" name="csrfmiddlewaretoken" value="from-page">';
    expect(csrfToken()).toBe("from-page");
  });
});

describe("errorMessage", () => {
  it("says DRF's detail, a field's first message, or the status", async () => {
    expect(await errorMessage(new Response(JSON.stringify({ detail: "Only radiologists review." }), { status: 403 }))).toBe("Only radiologists review.");
    expect(await errorMessage(new Response(JSON.stringify({ mask_png: ["the mask is 64×32"] }), { status: 400 }))).toBe("mask_png: the mask is 64×32");
    expect(await errorMessage(new Response("", { status: 404 }))).toBe("Not found (or not yours to see).");
    expect(await errorMessage(new Response("<html>oops</html>", { status: 502 }))).toBe("HTTP 502: <html>oops</html>");
  });
});

describe("requests", () => {
  it("reads the worklist with the session cookie", async () => {
    const calls: Call[] = [];
    serve(200, { count: 0, next: null, previous: null, results: [] }, calls);
    const page = await seriesList({ unreviewed: true });
    expect(page.count).toBe(0);
    expect(calls[0].url).toBe("/api/series/?modality=MR&unreviewed=true&limit=25");
    expect(calls[0].init.credentials).toBe("same-origin");
  });

  it("posts a review as JSON with the CSRF token", async () => {
    document.body.innerHTML = '<input type="hidden" name="csrfmiddlewaretoken" value="tok">';
    const calls: Call[] = [];
    serve(201, { id: 1, action: "correct" }, calls);
    await findingReview(7, "correct", { maskPngBase64: "iVBOR", comment: "" });
    const { url, init } = calls[0];
    expect(url).toBe("/api/findings/7/reviews/");
    expect(init.method).toBe("POST");
    expect((init.headers as Record<string, string>)["X-CSRFToken"]).toBe("tok");
    expect(JSON.parse(String(init.body))).toEqual({ action: "correct", mask_png: "iVBOR" });
  });

  it("turns an error response into an ApiError with the server's reason", async () => {
    serve(403, { detail: "Only the site's radiologists and administrators review findings." }, []);
    const failure = findingReview(7, "accept");
    await expect(failure).rejects.toBeInstanceOf(ApiError);
    await expect(failure).rejects.toMatchObject({ status: 403, message: expect.stringContaining("radiologists") });
  });

  it("accepts an empty 204 answer to a DELETE", async () => {
    serve(204, "", []);
    await expect(sendJson("DELETE", "/api/series/x/roi/")).resolves.toBeUndefined();
  });
});

describe("blobToBase64", () => {
  it("encodes bytes exactly, also past one chunk", async () => {
    const bytes = new Uint8Array(70000).map((_, i) => (i * 7) % 256);
    const encoded = await blobToBase64(new Blob([bytes]));
    const decoded = Uint8Array.from(atob(encoded), (c) => c.charCodeAt(0));
    expect(decoded).toEqual(bytes);
  });
});
