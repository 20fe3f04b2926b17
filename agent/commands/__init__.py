"""What the commands share around `agent/cli.py`: the body of `run` (run), standard output (console), the
flags run, batch and experiment declare once (options), the checks every command makes before it starts
work and its one way to refuse (checks), check's progress lines (progress), a run's plan, checked before
anything heavy loads (run_setup), `run_one`, the one path from a plan to a finished run (run_problem),
and what `run` does on Ctrl-C (interrupt) and on `--resume` (resume)."""
