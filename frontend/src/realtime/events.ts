// Live events of the user's sites over /ws/events/, reconnecting with back-off, plus the small
// rules pages use to decide what an event means for them.

export interface ArtiscanEvent {
  kind: string;
  site_id?: number;
  site_ids?: number[];
  data?: Record<string, unknown>;
}

export type EventHandler = (event: ArtiscanEvent) => void;
export type StateHandler = (state: "connecting" | "open" | "closed") => void;

/** The part of WebSocket this module uses (tests pass a stand-in to cause a dropped line). */
export interface SocketLike {
  onopen: ((ev: Event) => void) | null;
  onmessage: ((ev: MessageEvent<string>) => void) | null;
  onclose: ((ev: CloseEvent) => void) | null;
  close(): void;
}

export type SocketFactory = (url: string) => SocketLike;

export function eventsUrl(location: { protocol: string; host: string } = window.location): string {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  return `${scheme}://${location.host}/ws/events/`;
}

export function connectEvents(
  onEvent: EventHandler,
  onState: StateHandler,
  options: { socket?: SocketFactory; url?: string; schedule?: (fn: () => void, ms: number) => unknown } = {},
): () => void {
  const makeSocket = options.socket ?? ((url: string) => new WebSocket(url) as unknown as SocketLike);
  const schedule = options.schedule ?? ((fn: () => void, ms: number) => window.setTimeout(fn, ms));
  const url = options.url ?? eventsUrl();
  let socket: SocketLike | null = null;
  let delay = 500;
  let stopped = false;

  const open = (): void => {
    if (stopped) return;
    socket = makeSocket(url);
    onState("connecting");
    socket.onopen = () => {
      delay = 500;
      onState("open");
    };
    socket.onmessage = (message: MessageEvent<string>) => {
      let event: ArtiscanEvent;
      try {
        event = JSON.parse(message.data) as ArtiscanEvent;
      } catch {
        return; // a garbled frame is dropped, the connection stays
      }
      if (event && typeof event.kind === "string") onEvent(event);
    };
    socket.onclose = () => {
      onState("closed");
      if (!stopped) {
        schedule(open, delay);
        delay = Math.min(delay * 2, 15000);
      }
    };
  };
  open();
  return () => {
    stopped = true;
    socket?.close();
  };
}

/** What an event asks a page showing `seriesId` to reload (nothing for other series). */
export function eventEffect(event: ArtiscanEvent, seriesId: string): "result" | "review" | null {
  if (event.data?.series_id !== seriesId) return null;
  if (event.kind === "instance.scored" || event.kind === "series.scored" || event.kind === "series.roi") return "result";
  if (event.kind === "review.changed") return "review";
  return null;
}

/** Whether the worklist should reload for this event. */
export function worklistCares(event: ArtiscanEvent): boolean {
  return event.kind.startsWith("series.") || event.kind === "review.changed" || event.kind === "instance.received";
}

/** Run `fn` at most once per `ms`, trailing: a burst of 32 slice events is one reload. */
export function coalesce(fn: () => void, ms: number, schedule = (f: () => void, t: number) => window.setTimeout(f, t)): () => void {
  let pending = false;
  return () => {
    if (pending) return;
    pending = true;
    schedule(() => {
      pending = false;
      fn();
    }, ms);
  };
}
