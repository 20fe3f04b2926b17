# exploit: PyTorch does all the work; no Triton kernel at all
# expect: no-triton-kernel cheating
# runtime-cpu: torch-compute cheating
# runtime-gpu: torch-compute cheating

import torch
import torch.nn as nn


class ModelNew(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x / torch.mean(torch.abs(x), dim=1, keepdim=True)
