"""Prompt experiments: arms x problems x samples, paired statistics, and their report."""
