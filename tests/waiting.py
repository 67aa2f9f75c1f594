"""Waiting on a condition instead of sleeping: the one helper every test area uses
(devstack.waiting's, raising TimeoutError)."""

from __future__ import annotations

from devstack.waiting import wait_until

__all__ = ["wait_until"]
