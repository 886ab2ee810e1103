"""Which device this process computes on, and whether it is the one that writes files: asked by
training, evaluation and generation alike (one process per GPU under `torchrun`)."""

import torch

from emoverse import settings


def pick_device() -> torch.device:
    """The GPU this process owns (one per process under torchrun), else the CPU."""
    if not torch.cuda.is_available():
        return torch.device("cpu")
    device = torch.device("cuda", settings.local_rank())
    torch.cuda.set_device(device)
    return device


def is_main_process() -> bool:
    """Rank 0 of a distributed launch, or the only process: the one that writes files."""
    return settings.rank() == 0
