"""The Triton-source toolkit: reading kernels from the AST, editing their parameters, the tiling space, the
stage rules and the anti-cheat rules."""
