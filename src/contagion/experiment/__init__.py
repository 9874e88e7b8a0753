"""Experiment configs, the runner, executors and the results store."""
