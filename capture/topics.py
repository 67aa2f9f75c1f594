"""Kafka topic names: one place, so capture, consumers and replay agree."""

from __future__ import annotations


def table_topic(prefix: str, schema: str, table: str) -> str:
    return f"{prefix}.{schema}.{table}"


def transaction_topic(prefix: str) -> str:
    return f"{prefix}.transaction"


def alerts_topic(prefix: str) -> str:
    return f"{prefix}.alerts"


def deadletter_topic(prefix: str) -> str:
    return f"{prefix}.deadletter"


DEFAULT_TABLES: tuple[str, ...] = ("public.core_relationships", "public.core_dynamic_data")
