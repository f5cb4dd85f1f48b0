"""ARQ workers: the batched fan-out, per-endpoint delivery lanes, and the periodic sweeper."""
