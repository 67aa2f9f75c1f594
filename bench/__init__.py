"""hera-guard benchmarks: scripts that measure, never timed tests. `make bench` runs them all."""
