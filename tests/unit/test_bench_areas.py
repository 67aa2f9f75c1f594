"""Which modules ``python -m bench`` runs as areas."""

from __future__ import annotations

import importlib

from bench.__main__ import discover_areas


def test_every_discovered_area_is_a_module_with_a_run_function() -> None:
    # A helper module under bench/ that is not an area (a script run in another tree, say)
    # must not be discovered: the run would import it as one and fail.
    areas = discover_areas()
    assert "capture" in areas
    for area in areas:
        module = importlib.import_module(f"bench.{area}")
        assert callable(getattr(module, "run", None)), f"bench/{area}.py has no run()"
