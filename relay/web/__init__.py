"""The public door: the 2Checkout ingress, its middleware, probes and metrics, and the typed app keys."""
