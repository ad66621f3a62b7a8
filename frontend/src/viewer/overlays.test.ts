import { describe, expect, it } from "vitest";

import { OverlayState } from "./overlays";

describe("OverlayState", () => {
  it("lists the series' types in canonical order, all on at half opacity", () => {
    const state = new OverlayState(["noise", "motion", "motion", "not_a_type"]);
    expect(state.types).toEqual(["motion", "noise"]);
    expect(state.get("motion")).toEqual({ visible: true, opacity: 0.5 });
    expect(state.get("ghosting")).toBeUndefined();
  });

  it("tells listeners about real changes only", () => {
    const state = new OverlayState(["motion", "ghosting"]);
    const seen: string[] = [];
    state.onChange((type, s) => seen.push(`${type}:${s.visible}:${s.opacity}`));
    expect(state.toggle("motion")).toBe(true);
    expect(state.setVisible("motion", false)).toBe(false); // already off
    expect(state.setOpacity("ghosting", 1.7)).toBe(true); // clamped to 1
    expect(state.setOpacity("ghosting", 1)).toBe(false);
    expect(state.toggle("spike")).toBe(false); // not in this series
    expect(seen).toEqual(["motion:false:0.5", "ghosting:true:1"]);
  });

  it("maps digits to the n-th type, 0 to the tenth", () => {
    const state = new OverlayState(["motion", "ghosting", "aliasing", "chemical_shift", "susceptibility", "zipper", "spike", "gibbs", "bias_field", "noise"]);
    expect(state.toggleByDigit(2)).toBe("ghosting");
    expect(state.get("ghosting")?.visible).toBe(false);
    expect(state.toggleByDigit(0)).toBe("noise");
    expect(new OverlayState(["motion"]).toggleByDigit(5)).toBeNull();
  });

  it("turns all on when any is off, else all off, and shifts opacity within 0..1", () => {
    const state = new OverlayState(["motion", "ghosting"]);
    state.toggle("motion");
    state.toggleAll();
    expect(state.visibleTypes()).toEqual(["motion", "ghosting"]);
    state.toggleAll();
    expect(state.visibleTypes()).toEqual([]);
    for (let i = 0; i < 8; i++) state.shiftOpacity(0.1);
    expect(state.get("motion")?.opacity).toBe(1);
    state.shiftOpacity(-0.3);
    expect(state.get("ghosting")?.opacity).toBe(0.7);
  });

  it("adds types that appear later (live scoring) and keeps earlier settings", () => {
    const state = new OverlayState(["motion"]);
    state.setOpacity("motion", 0.2);
    expect(state.setAvailable(["motion", "spike"])).toEqual(["spike"]);
    expect(state.get("motion")?.opacity).toBe(0.2);
    expect(state.types).toEqual(["motion", "spike"]);
  });
});
