"""Profiling with Nsight Compute: the ncu runner, the program it profiles, and reading its reports."""
