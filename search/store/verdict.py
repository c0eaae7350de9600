"""The one verdict a search states: does its best searched architecture beat the best uniform
network of the paper at or below its cost, on the held-out test images, beyond noise?

The console prints it, the export stores it in the architecture file (``search.check`` shows
it) and the report shows it, all from here, so they say the same. Both sides are chosen on
validation (the rival by its mean validation accuracy, confirmed baselines first); the searched
side's test figure leaves out the run that picked it when it has confirmation runs, and says it
includes it otherwise. Where every run kept which test images it got right, the comparison is
paired on those images and counts the seed noise (:func:`search.store.paired.paired_verdict`);
runs of older studies are taken as independent (:func:`search.store.uncertainty.verdict`).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

import numpy as np

from search.store import records
from search.store.paired import paired_verdict, pooled_seed_noise, unpack_correct
from search.store.records import TrialRecord
from search.store.uncertainty import estimate, verdict


def search_verdict(all_records: Sequence[TrialRecord], test_images: int | None) -> str | None:
    """The verdict sentence; None when the study has no searched architecture yet."""
    groups = records.runs_by_architecture(all_records)
    searched = [g for g in groups if not g.first.baseline_part]
    if not searched:
        return None
    best = searched[0]
    cost = best.first.paper_macs or 0
    cheaper = [g for g in groups if g.first.baseline_part
               and (g.first.paper_macs or 0) <= cost and g.test_accuracies]
    if not best.test_accuracies:
        return (f"the best searched architecture (trial {best.first.number}) has no test "
                f"accuracy; nothing to compare")
    if not cheaper:
        return ("no uniform baseline at or below the best searched architecture's cost was "
                "tested; nothing to compare it with")
    rival = max(cheaper, key=lambda g: (g.confirmed, statistics.fmean(g.val_accuracies)))
    # The first run picked the architecture on validation; its confirmation seeds did not.
    mine = best.runs[1:] if best.confirmed else best.runs
    name = (f"the best searched architecture (trial {best.first.number}"
            + (", its confirmation runs)" if best.confirmed
               else ", one run, the one that picked it)"))
    rival_name = (f"the best uniform baseline at or below its cost by validation "
                  f"({rival.first.kind}, trial {rival.first.number})")
    masks = _test_masks(mine, test_images), _test_masks(rival.runs, test_images)
    if masks[0] is not None and masks[1] is not None:
        noise = pooled_seed_noise(g.test_accuracies for g in groups)
        return paired_verdict(masks[0], masks[1], noise, name, rival_name, "the test split")
    return verdict(estimate([r.test_accuracy for r in mine if r.test_accuracy is not None],
                            test_images),
                   estimate(rival.test_accuracies, test_images), name, rival_name,
                   "the test split")


def _test_masks(runs: Sequence[TrialRecord], images: int | None) -> np.ndarray | None:
    """Which test images each run got right (runs x images); None unless every run kept them
    and the study says how many test images there are."""
    if images is None or any(r.test_correct is None for r in runs):
        return None
    return np.stack([unpack_correct(r.test_correct or "", images) for r in runs])
