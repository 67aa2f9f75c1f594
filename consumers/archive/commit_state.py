"""What every archiver commit carries besides its rows: the consumer position and the
stream identity, in the Delta commit's ``commitInfo`` (custom metadata, key ``hera-guard``)
next to the app transaction ``Transaction(APP_ID, batch)``.

Both are part of the one atomic commit that adds the batch's files: after a crash the
table's newest commit with this metadata says exactly which records are in the table (the
offsets: next offset to consume per topic partition) and of which stream (the identity).
``DeltaTable.transaction_version(APP_ID)`` must equal that commit's ``batch``: it is the
version the next commit is conditioned on (see store.ArchiveStore.append).
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from hera_kit.identity import StreamIdentity

APP_ID = "hera-guard-archiver"
METADATA_KEY = "hera-guard"
FORMAT_KEY = "hera-guard-archive"  # the Delta table name
FORMAT_VERSION = 2  # 1 was the manifest + segments directory (consumers archive migrate)

Offsets = dict[tuple[str, int], int]  # (topic, partition) -> next offset to consume


class CommitState(BaseModel):
    model_config = ConfigDict(frozen=True)

    batch: int = 0  # the app-transaction version of this commit
    offsets: dict[str, dict[str, int]] = Field(default_factory=dict)  # topic -> part -> next
    identity: StreamIdentity | None = None
    dead_letters: int = 0  # records sent to the dead-letter topic, in total

    def offset_map(self) -> Offsets:
        return {(t, int(p)): o for t, parts in self.offsets.items() for p, o in parts.items()}

    def advanced(self, batch: int, offsets: Offsets, identity: StreamIdentity | None,
                 dead_letters: int) -> CommitState:
        merged = {t: dict(p) for t, p in self.offsets.items()}
        for (topic, partition), offset in offsets.items():
            merged.setdefault(topic, {})[str(partition)] = offset
        return CommitState(batch=batch, offsets=merged,
                           identity=identity if identity is not None else self.identity,
                           dead_letters=self.dead_letters + dead_letters)

    def metadata(self) -> dict[str, Any]:
        return {METADATA_KEY: self.model_dump_json()}


def state_of_commit(info: dict[str, Any]) -> CommitState | None:
    raw = info.get(METADATA_KEY)
    if raw is None:
        return None
    return CommitState.model_validate(json.loads(raw) if isinstance(raw, str) else raw)
