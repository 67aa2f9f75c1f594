"""The local stack: a throw-away PostgreSQL with wal2json + pg_cron and a Kafka-protocol broker.

Used by the tests, the benchmarks and the demo. Never touches the machine's default cluster.
"""
