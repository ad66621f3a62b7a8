// The annotate page (entry point).
export {};
