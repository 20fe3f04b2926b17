"""Prompts: stages as data (prompts/stages/*.toml), rendering them with jinja2, and the GPU spec table."""
