// The dashboard page (entry point).
export {};
