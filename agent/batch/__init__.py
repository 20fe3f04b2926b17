"""Batches: many problems through one pipeline, on every GPU (a local pool or Ray), resumable, summarised."""
