import { fileURLToPath } from "node:url";
import { defineConfig } from "vite";

const here = (path: string): string => fileURLToPath(new URL(path, import.meta.url));

// Built into Django's static files: backend/static_build/app/<entry>.js (Django hashes names).
export default defineConfig({
  build: {
    outDir: here("../backend/static_build/app"),
    emptyOutDir: true,
    rollupOptions: {
      input: {
        worklist: here("src/worklist/main.ts"),
        upload: here("src/upload/main.ts"),
      },
      output: {
        entryFileNames: "[name].js",
        chunkFileNames: "[name].js",
        assetFileNames: "[name][extname]",
      },
    },
  },
});
