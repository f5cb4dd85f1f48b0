"""ARQ workers: the fan-out job, per-endpoint delivery lanes, and the periodic sweeper."""
