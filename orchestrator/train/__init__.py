"""Training: config, sd-scripts arguments, runtimes, progress, reports."""
