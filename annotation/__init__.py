"""Annotation campaigns: readers, adjudication, agreement and versioned training sets."""
