"""The reference's initial weights given to ModelNew, so that a Model with parameters and its ModelNew
compute from the same values.

Both are built right after the same `torch.manual_seed(seed)`, so a ModelNew that creates the same
layers in the same order already draws the same values. On top of that, the reference's `state_dict` is
loaded into ModelNew:
- by name, when both have the same keys with the same shapes;
- by position, when the keys differ (renamed attributes: `self.fc` for `self.linear`) but the two lists of
  shapes, in order, are the same;
- not at all otherwise (fused or reshaped weights: a concatenated QKV, a folded BatchNorm). ModelNew then
  keeps what its own constructor made under the same seed, and it is correct only if it derives its
  weights from the same draws; the judge never guesses a mapping, and the check's detail says which case
  applied.
"""

from __future__ import annotations

from typing import Any


def matched_state(reference: dict[str, Any], candidate: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
    """(state_dict to load into the candidate or None, how it was matched)."""
    if not reference:
        return None, "the reference has no parameters"
    ref_shapes = [tuple(v.shape) for v in reference.values()]
    new_shapes = [tuple(v.shape) for v in candidate.values()]
    if reference.keys() == candidate.keys() and all(
        tuple(reference[k].shape) == tuple(candidate[k].shape) for k in reference
    ):
        return dict(reference), "the reference's weights loaded by name"
    if ref_shapes == new_shapes:
        mapped = dict(zip(candidate.keys(), reference.values(), strict=True))
        return mapped, "the reference's weights loaded by position (same shapes, other names)"
    return None, (
        "the reference's weights not loaded (names and shapes differ: fused or reshaped weights); "
        "ModelNew keeps its own initial values, drawn under the same seed"
    )
