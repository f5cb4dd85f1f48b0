"""Fault scenarios against real relay processes on loopback (docs/reliability.md)."""
