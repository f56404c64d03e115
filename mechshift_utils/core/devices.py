"""Which device a run uses."""
from __future__ import annotations

import torch

from .validation import ParameterError

DEVICES = ("auto", "cpu", "cuda", "mps")


def resolve_device(device: str = "auto") -> torch.device:
    """'auto' picks the GPU when one is present, else the CPU."""
    if not isinstance(device, str):
        raise ParameterError(f"device: expected one of {list(DEVICES)} or 'cuda:N', got {device!r}")
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    base = device.split(":")[0]
    if base not in DEVICES[1:]:
        raise ParameterError(f"device: expected one of {list(DEVICES)} or 'cuda:N', got {device!r}")
    if base == "cuda" and not torch.cuda.is_available():
        raise ParameterError(f"device: {device!r} was asked for but no CUDA GPU is visible; use 'auto' or 'cpu'")
    return torch.device(device)
