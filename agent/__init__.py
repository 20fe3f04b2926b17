"""ncu-agent: profiling-driven optimization of Triton kernels."""

__version__ = "0.1.0"
