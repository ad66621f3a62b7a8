import { describe, expect, it } from "vitest";

import { coalesce, connectEvents, eventEffect, eventsUrl, worklistCares, type ArtiscanEvent, type SocketLike } from "./events";

class FakeSocket implements SocketLike {
  onopen: ((ev: Event) => void) | null = null;
  onmessage: ((ev: MessageEvent<string>) => void) | null = null;
  onclose: ((ev: CloseEvent) => void) | null = null;
  closed = false;
  constructor(public url: string) {}
  close(): void {
    this.closed = true;
  }
  receive(data: string): void {
    this.onmessage?.({ data } as MessageEvent<string>);
  }
}

function harness() {
  const sockets: FakeSocket[] = [];
  const timers: { fn: () => void; ms: number }[] = [];
  const events: ArtiscanEvent[] = [];
  const states: string[] = [];
  const stop = connectEvents((e) => events.push(e), (s) => states.push(s), {
    url: "ws://test/ws/events/",
    socket: (url) => {
      const s = new FakeSocket(url);
      sockets.push(s);
      return s;
    },
    schedule: (fn, ms) => timers.push({ fn, ms }),
  });
  return { sockets, timers, events, states, stop };
}

describe("connectEvents", () => {
  it("passes events on and drops garbled frames without closing", () => {
    const h = harness();
    h.sockets[0].onopen?.(new Event("open"));
    h.sockets[0].receive('{"kind":"series.scored","site_id":1,"data":{"series_id":"s"}}');
    h.sockets[0].receive("not json");
    h.sockets[0].receive('{"no":"kind"}');
    expect(h.events).toEqual([{ kind: "series.scored", site_id: 1, data: { series_id: "s" } }]);
    expect(h.states).toEqual(["connecting", "open"]);
  });

  it("reconnects with a doubling back-off capped at 15 s, reset by a successful open", () => {
    const h = harness();
    const delays: number[] = [];
    for (let i = 0; i < 7; i++) {
      h.sockets.at(-1)?.onclose?.({} as CloseEvent);
      const timer = h.timers.shift();
      if (!timer) throw new Error("no reconnect scheduled");
      delays.push(timer.ms);
      timer.fn();
    }
    expect(delays).toEqual([500, 1000, 2000, 4000, 8000, 15000, 15000]);
    h.sockets.at(-1)?.onopen?.(new Event("open"));
    h.sockets.at(-1)?.onclose?.({} as CloseEvent);
    expect(h.timers[0].ms).toBe(500);
  });

  it("stops for good when the page stops it", () => {
    const h = harness();
    h.stop();
    expect(h.sockets[0].closed).toBe(true);
    h.sockets[0].onclose?.({} as CloseEvent);
    expect(h.timers).toEqual([]);
  });
});

describe("what an event means", () => {
  it("reloads the viewer's result or review only for its own series", () => {
    expect(eventEffect({ kind: "instance.scored", data: { series_id: "a" } }, "a")).toBe("result");
    expect(eventEffect({ kind: "series.scored", data: { series_id: "a" } }, "a")).toBe("result");
    expect(eventEffect({ kind: "series.roi", data: { series_id: "a" } }, "a")).toBe("result");
    expect(eventEffect({ kind: "review.changed", data: { series_id: "a" } }, "a")).toBe("review");
    expect(eventEffect({ kind: "review.changed", data: { series_id: "b" } }, "a")).toBeNull();
    expect(eventEffect({ kind: "subscribed", site_ids: [1] }, "a")).toBeNull();
  });

  it("refreshes the worklist for series, review and arrival events", () => {
    expect(worklistCares({ kind: "series.scored" })).toBe(true);
    expect(worklistCares({ kind: "review.changed" })).toBe(true);
    expect(worklistCares({ kind: "instance.received" })).toBe(true);
    expect(worklistCares({ kind: "subscribed" })).toBe(false);
    expect(worklistCares({ kind: "upload.progress" })).toBe(false);
  });

  it("builds the socket URL from the page's scheme", () => {
    expect(eventsUrl({ protocol: "https:", host: "h:1" })).toBe("wss://h:1/ws/events/");
    expect(eventsUrl({ protocol: "http:", host: "h" })).toBe("ws://h/ws/events/");
  });
});

describe("coalesce", () => {
  it("turns a burst into one trailing call", () => {
    const pending: (() => void)[] = [];
    let calls = 0;
    const go = coalesce(() => calls++, 300, (fn) => pending.push(fn));
    for (let i = 0; i < 32; i++) go();
    expect(pending.length).toBe(1);
    pending.shift()?.();
    expect(calls).toBe(1);
    go();
    expect(pending.length).toBe(1);
  });
});
