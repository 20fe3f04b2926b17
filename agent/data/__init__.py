"""The bundled data: the GPU table shipped inside the package (gpus.toml), and where the checkout's or the
wheel's prompts/, profiles/ and kernels/ folders are (paths)."""
