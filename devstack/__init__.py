"""The local stack: a throw-away PostgreSQL (pg_cron, wal2json if installed) and a
Kafka-protocol broker.

Used by the tests, the benchmarks and the demo. Never touches the machine's default cluster.
"""
