"""Evaluating a candidate: the sandboxed worker, the judge that compares and times it, the run-time guards
and Triton hooks around it."""
