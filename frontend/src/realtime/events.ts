// Live events of the user's sites over /ws/events/, reconnecting with back-off.

export interface ArtiscanEvent {
  kind: string;
  site_id?: number;
  site_ids?: number[];
  data?: Record<string, unknown>;
}

export type EventHandler = (event: ArtiscanEvent) => void;
export type StateHandler = (state: "connecting" | "open" | "closed") => void;

export function connectEvents(onEvent: EventHandler, onState: StateHandler): () => void {
  let socket: WebSocket | null = null;
  let delay = 500;
  let stopped = false;

  const open = (): void => {
    const scheme = window.location.protocol === "https:" ? "wss" : "ws";
    socket = new WebSocket(`${scheme}://${window.location.host}/ws/events/`);
    onState("connecting");
    socket.onopen = () => {
      delay = 500;
      onState("open");
    };
    socket.onmessage = (message: MessageEvent<string>) => {
      onEvent(JSON.parse(message.data) as ArtiscanEvent);
    };
    socket.onclose = () => {
      onState("closed");
      if (!stopped) {
        window.setTimeout(open, delay);
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
