"""ModelNew gets the reference's initial weights (agent/evaluation/weights.py), tried on a level-2-style
problem (a GEMM with parameters, a scaling and a residual add)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from agent.evaluation.evaluate import evaluate
from agent.evaluation.weights import matched_state
from agent.problem import load_problem

HERE = Path(__file__).resolve().parent
LEVEL2 = HERE / "kernelbench_problems" / "gemm_scale_residual.py"
HONEST = (HERE / "kernelbench_replies" / "gemm_scale_residual.py").read_text()

# The same kernel, its weights under other names and initialised to zeros: right only if the reference's
# weights are loaded by position.
RENAMED = HONEST.replace(
    "        self.linear = nn.Linear(in_features, out_features)\n",
    "        self.w = nn.Parameter(torch.zeros(out_features, in_features))\n"
    "        self.b = nn.Parameter(torch.zeros(out_features))\n",
).replace("linear(x, self.linear,", "linear(x, self,")
RENAMED = RENAMED.replace("layer.weight", "layer_weight(layer)").replace("layer.bias", "layer_bias(layer)")
RENAMED += (
    "\n\ndef layer_weight(layer):\n    return layer.w if hasattr(layer, 'w') else layer.weight\n"
    "\n\ndef layer_bias(layer):\n    return layer.b if hasattr(layer, 'b') else layer.bias\n"
)


def test_matching_by_name_by_position_or_not_at_all() -> None:
    ref = {"linear.weight": torch.ones(4, 3), "linear.bias": torch.ones(4)}
    same, how = matched_state(ref, {"linear.weight": torch.zeros(4, 3), "linear.bias": torch.zeros(4)})
    assert same is not None and "by name" in how
    renamed, how = matched_state(ref, {"w": torch.zeros(4, 3), "b": torch.zeros(4)})
    assert renamed is not None and set(renamed) == {"w", "b"} and "by position" in how
    fused, how = matched_state(ref, {"wb": torch.zeros(4, 4)})  # weight and bias in one tensor
    assert fused is None and "not loaded" in how
    assert matched_state({}, {"w": torch.zeros(1)})[0] is None


@pytest.mark.slow
def test_renamed_weights_of_a_level2_problem_are_loaded_by_position() -> None:
    spec = load_problem(LEVEL2)
    result = evaluate(spec, RENAMED, "cpu", seeds=(0,))
    assert result.accepted, result.reason
    weights = next(c for c in result.checks if c.name == "weights")
    assert "by position" in weights.detail
