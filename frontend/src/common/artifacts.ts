/**
 * The ten artifact types in canonical order (ml.ARTIFACT_TYPES) and one colour per type, used
 * everywhere in the product (viewer overlays, worklist badges, dashboards, annotation). The
 * colours are the sRGB rendering of the CIELab values in backend/scoring/seg.py (the DICOM SEG's
 * RecommendedDisplayCIELabValue), so an overlay in our viewer and in OHIF look alike.
 */
export const ARTIFACT_TYPES = [
  "motion",
  "ghosting",
  "aliasing",
  "chemical_shift",
  "susceptibility",
  "zipper",
  "spike",
  "gibbs",
  "bias_field",
  "noise",
] as const;

export type ArtifactType = (typeof ARTIFACT_TYPES)[number];

export const ARTIFACT_RGB: Record<ArtifactType, [number, number, number]> = {
  motion: [251, 90, 59],
  ghosting: [124, 188, 74],
  aliasing: [174, 115, 251],
  chemical_shift: [234, 214, 36],
  susceptibility: [229, 38, 56],
  zipper: [3, 252, 244],
  spike: [240, 41, 168],
  gibbs: [248, 168, 44],
  bias_field: [0, 176, 228],
  noise: [198, 198, 198],
};

export function artifactLabel(type: string): string {
  return type.replace("_", " ");
}

export function artifactColour(type: string, alpha = 1): string {
  const rgb = ARTIFACT_RGB[type as ArtifactType] ?? [128, 128, 128];
  return `rgba(${rgb[0]}, ${rgb[1]}, ${rgb[2]}, ${alpha})`;
}
