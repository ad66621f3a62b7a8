import { fileURLToPath } from "node:url";
import { defineConfig } from "vite";

const here = (path: string): string => fileURLToPath(new URL(path, import.meta.url));

// Built into Django's static files: backend/static_build/app/<entry>.js (Django hashes names).
export default defineConfig({
  // Served by Django from /static/app/ (workers and codecs are fetched relative to it).
  base: "/static/app/",
  worker: { format: "es" },
  resolve: {
    alias: {
      // vtk.js (under Cornerstone3D) reaches xmlbuilder2, whose CommonJS sources have circular
      // requires that Rollup orders wrongly ("Class extends value undefined"); its prebuilt
      // browser bundle has none.
      xmlbuilder2: here("node_modules/xmlbuilder2/lib/xmlbuilder2.min.js"),
    },
  },
  build: {
    outDir: here("../backend/static_build/app"),
    emptyOutDir: true,
    rollupOptions: {
      input: {
        worklist: here("src/worklist/main.ts"),
        upload: here("src/upload/main.ts"),
        viewer: here("src/viewer/main.ts"),
        // The viewer page loads this first; it draws the first image, then imports the viewer.
        preview: here("src/viewer/preview.ts"),
        dashboard: here("src/dashboard/main.ts"),
        annotate: here("src/annotate/main.ts"),
      },
      output: {
        entryFileNames: "[name].js",
        chunkFileNames: "[name].js",
        assetFileNames: "[name][extname]",
      },
    },
  },
});
