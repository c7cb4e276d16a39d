"""The garbage collector's settings once the server has started."""

from __future__ import annotations

import gc

from minimix.app import settle_garbage_collector


def test_start_up_objects_are_frozen_and_full_collections_are_rarer() -> None:
    before = gc.get_threshold()
    try:
        settle_garbage_collector()
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == (700, 10, 100)
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
