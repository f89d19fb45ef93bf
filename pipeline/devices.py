"""Where a torch model runs: one rule for every deployment that loads one (ACE-Step, Demucs)."""

from __future__ import annotations


def pick_torch_device(setting: str, setting_name: str) -> str:
    """The torch device for a `device` setting: "auto" is cuda, then mps, then cpu; "cuda",
    "mps" and "cpu" are taken as asked.

    Raises ValueError naming `setting_name` (e.g. "postprocess.stems.device") when the requested
    accelerator is not on this machine, or the value is not one of those four.
    """
    import torch

    cuda = torch.cuda.is_available()
    mps = bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()
    if setting == "auto":
        return "cuda" if cuda else "mps" if mps else "cpu"
    if setting == "cpu" or (setting == "cuda" and cuda) or (setting == "mps" and mps):
        return setting
    if setting in ("cuda", "mps"):
        raise ValueError(
            f"{setting_name} is {setting!r} but this machine has no {setting} device: set it to "
            "'auto' or 'cpu', or pin the deployment to nodes that have one"
        )
    raise ValueError(f"{setting_name} must be auto, cuda, mps or cpu, got {setting!r}")
