"""The previous release's view dedup overhead, taken the way ``bench/archive.py`` takes ours.

Its own bench scans once each (a raw scan of ~10 ms against one of the view): one hiccup of the
host moves that ratio by a fifth. This script is not imported: ``bench/previous.py`` runs its
text with ``python -c`` in the previous release's worktree, so ``bench.archive`` and
``consumers.archive`` below are that release's own modules (its archive built by its own
ingest); it prints the scans' times as JSON and ``bench/previous.py`` brackets them with our
``bench.common.bracketed``. Self-contained: that release's ``bench.common`` has no
``alternate``. Its name starts with ``_``: it is not a bench area.
"""

import json
import sys
import tempfile
import time
from pathlib import Path

from bench.archive import _events, _store_ingest
from consumers.archive.reader import connect_history

_RAW = "SELECT count(*), max(length(after)) FROM raw_changes"
_VIEW = "SELECT count(*), max(length(CAST(after AS VARCHAR))) FROM changes"


def main(events: int, scans: int) -> None:
    with tempfile.TemporaryDirectory(prefix="hera-previous-views-") as tmp:
        root = Path(tmp) / "store"
        _store_ingest(_events(events), root)
        con = connect_history(root)
        rows = int(con.execute("SELECT count(*) FROM raw_changes").fetchall()[0][0])

        def ms(sql: str) -> float:
            t0 = time.perf_counter()
            con.execute(sql).fetchall()
            return (time.perf_counter() - t0) * 1000

        ms(_VIEW)  # warm the file cache, as ours does
        raw, view = [], []
        for i in range(scans + 1):  # raw, view, raw, …, raw: bracketed
            raw.append(ms(_RAW))
            if i < scans:
                view.append(ms(_VIEW))
        json.dump({"rows": rows, "raw_ms": raw, "view_ms": view}, sys.stdout)


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]))
