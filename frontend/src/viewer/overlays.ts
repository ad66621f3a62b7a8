// Which artifact overlays are on and how opaque: plain state, no Cornerstone, so it is unit
// tested; the viewer applies each change to its labelmap layers.

import { ARTIFACT_TYPES, type ArtifactType } from "../common/artifacts";

export interface OverlaySetting {
  visible: boolean;
  opacity: number;
}

export type OverlayListener = (type: ArtifactType, setting: OverlaySetting) => void;

export const DEFAULT_OPACITY = 0.5;

export class OverlayState {
  private settings = new Map<ArtifactType, OverlaySetting>();
  private listeners: OverlayListener[] = [];

  /** `available`: the types that have a finding somewhere in the series, in canonical order. */
  constructor(available: Iterable<string> = []) {
    this.setAvailable(available);
  }

  setAvailable(available: Iterable<string>): ArtifactType[] {
    const wanted = new Set(available);
    const added: ArtifactType[] = [];
    for (const type of ARTIFACT_TYPES) {
      if (wanted.has(type) && !this.settings.has(type)) {
        this.settings.set(type, { visible: true, opacity: DEFAULT_OPACITY });
        added.push(type);
      }
    }
    return added;
  }

  get types(): ArtifactType[] {
    return ARTIFACT_TYPES.filter((t) => this.settings.has(t));
  }

  get(type: string): OverlaySetting | undefined {
    const s = this.settings.get(type as ArtifactType);
    return s ? { ...s } : undefined;
  }

  onChange(listener: OverlayListener): () => void {
    this.listeners.push(listener);
    return () => {
      this.listeners = this.listeners.filter((l) => l !== listener);
    };
  }

  private update(type: string, change: Partial<OverlaySetting>): boolean {
    const current = this.settings.get(type as ArtifactType);
    if (!current) return false;
    const next = { ...current, ...change };
    next.opacity = Math.round(Math.max(0, Math.min(1, next.opacity)) * 100) / 100;
    if (next.visible === current.visible && next.opacity === current.opacity) return false;
    this.settings.set(type as ArtifactType, next);
    for (const l of this.listeners) l(type as ArtifactType, { ...next });
    return true;
  }

  setVisible(type: string, visible: boolean): boolean {
    return this.update(type, { visible });
  }

  toggle(type: string): boolean {
    const s = this.settings.get(type as ArtifactType);
    return s ? this.update(type, { visible: !s.visible }) : false;
  }

  setOpacity(type: string, opacity: number): boolean {
    return this.update(type, { opacity });
  }

  /** Keyboard: digit 1–9, 0 toggles the n-th available type (1 = first, 0 = tenth). */
  toggleByDigit(digit: number): ArtifactType | null {
    const index = digit === 0 ? 9 : digit - 1;
    const type = this.types[index];
    if (!type) return null;
    this.toggle(type);
    return type;
  }

  /** All on if any is off, else all off (the "o" key). */
  toggleAll(): void {
    const anyOff = this.types.some((t) => !this.settings.get(t)?.visible);
    for (const t of this.types) this.setVisible(t, anyOff);
  }

  /** Shift the opacity of every type by `delta` (the "[" and "]" keys). */
  shiftOpacity(delta: number): void {
    for (const t of this.types) this.setOpacity(t, (this.settings.get(t)?.opacity ?? DEFAULT_OPACITY) + delta);
  }

  visibleTypes(): ArtifactType[] {
    return this.types.filter((t) => this.settings.get(t)?.visible);
  }
}
