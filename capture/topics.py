"""Kafka topic names: one place, so capture, consumers and replay agree."""

from __future__ import annotations

import json
import re
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator
from pydantic_settings import NoDecode


def table_topic(prefix: str, schema: str, table: str) -> str:
    return f"{prefix}.{schema}.{table}"


def transaction_topic(prefix: str) -> str:
    return f"{prefix}.transaction"


def alerts_topic(prefix: str) -> str:
    return f"{prefix}.alerts"


def deadletter_topic(prefix: str) -> str:
    return f"{prefix}.deadletter"


DEFAULT_TABLES: tuple[str, ...] = ("public.core_relationships", "public.core_dynamic_data")

_TABLE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*\.[A-Za-z_][A-Za-z0-9_$]*$")


def _split(v: object) -> object:
    if isinstance(v, str):
        text = v.strip()
        if text.startswith("["):  # a JSON list, as pydantic-settings users may write it
            return tuple(json.loads(text))
        return tuple(t.strip() for t in text.split(",") if t.strip())
    return v


def _check(v: tuple[str, ...]) -> tuple[str, ...]:
    if not v:
        raise ValueError("at least one schema.table")
    for t in v:
        if not _TABLE_RE.match(t):
            raise ValueError(f"{t!r} is not a schema-qualified name like public.core_relationships")
    return v


# A settings field of captured tables: "public.a, public.b" (or a JSON list) from the
# environment or a flag. NoDecode: pydantic-settings would otherwise insist on JSON.
TableList = Annotated[tuple[str, ...], NoDecode, BeforeValidator(_split), AfterValidator(_check)]
