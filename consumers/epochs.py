"""One log line when the stream a consumer reads starts a new capture epoch after a gap.

A new epoch (SNAPSHOT_START with a higher ``epoch_lsn`` than the one the consumer knew) means
capture's slot was lost or re-created: the changes committed between the old epoch's last
PROGRESS and the new snapshot were never captured. The consumer goes on (the new epoch is the
same stream; replay refuses points inside the gap), but an operator must be able to see when
and where it happened, in the archiver's and the detector's logs alike.
"""

from __future__ import annotations

import logging

from capture.event import MarkerKind, StreamMarker, format_lsn


class EpochWatch:
    def __init__(self, log: logging.Logger, epoch_lsn: int | None) -> None:
        self.log = log
        self.epoch_lsn = epoch_lsn  # the epoch the consumer knows (None: none yet)
        self.reach: int | None = None  # its highest PROGRESS seen by this process

    def seen(self, marker: StreamMarker) -> None:
        if marker.status is MarkerKind.PROGRESS and marker.epoch_lsn == self.epoch_lsn:
            self.reach = max(self.reach or 0, marker.lsn)
            return
        if marker.status is not MarkerKind.SNAPSHOT_START:
            return
        if self.epoch_lsn is not None and marker.epoch_lsn > self.epoch_lsn:
            ended = (f"its last progress at {format_lsn(self.reach)}" if self.reach is not None
                     else "its last progress before this process started")
            self.log.warning(
                "new capture epoch after a gap: slot %s starts a new snapshot at %s; the "
                "previous epoch (from %s) ended with %s; changes committed in between were "
                "not captured and replay refuses points inside the gap",
                marker.slot, format_lsn(marker.epoch_lsn), format_lsn(self.epoch_lsn), ended,
                extra={"slot": marker.slot, "epoch_lsn": format_lsn(marker.epoch_lsn),
                       "previous_epoch_lsn": format_lsn(self.epoch_lsn),
                       "gap_from": None if self.reach is None else format_lsn(self.reach)})
        if self.epoch_lsn is None or marker.epoch_lsn > self.epoch_lsn:
            self.epoch_lsn, self.reach = marker.epoch_lsn, None
