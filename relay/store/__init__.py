"""Redis: the connection (and the embedded server of `relay dev`), the ingest write, Lua scripts,
the read side (queries, stats) and resends."""
