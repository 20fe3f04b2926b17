"""How a problem reaches its starting point: small shapes for the CPU derived from a KernelBench file's own
size constants (small_shapes), and the first stage, a first correct Triton version written from the
PyTorch reference (first)."""
