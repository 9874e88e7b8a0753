"""Inspect AI's entry point (``[project.entry-points.inspect_ai]``): importing it registers the task
``contagion/contagion_bench``."""

from contagion.bench.inspect_task import contagion_bench

__all__ = ["contagion_bench"]
