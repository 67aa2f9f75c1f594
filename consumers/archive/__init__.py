"""The change archive: every change event, forever, as immutable Parquet segments + a manifest.

See ``store.py`` (the writer, atomic commits of events + Kafka offsets) and ``reader.py``
(``connect_history``: DuckDB views over the live segments).
"""
