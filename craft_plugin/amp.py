"""Whether a ``GradScaler`` skipped the optimizer step it was just asked to take.

Call it after ``scaler.step(optimizer)`` and before ``scaler.update()`` (where the patched
``train_v2.py`` fires ``on_optimizer_step``): a step whose gradients held inf/NaN was skipped and
is not a step. It reads the scaler's per-optimizer ``found_inf_per_device`` record, which torch has
kept under the same name since GradScaler appeared (1.6). :func:`craft_plugin.plugin.on_optimizer_step`
calls it once per step, and only when an enabled feature counts steps.
"""
from __future__ import annotations

from typing import Any, Optional

import torch


def step_was_skipped(scaler: Optional[Any], optimizer: torch.optim.Optimizer) -> bool:
    if scaler is None or not scaler.is_enabled():
        return False
    found = scaler._per_optimizer_states.get(id(optimizer), {}).get("found_inf_per_device", {})
    # A host-device sync (fp16 only): found_inf lives on the device and the answer exists nowhere on
    # the host (scaler.step reads it with .item() but keeps no record; get_scale() would sync too).
    return any(v.item() > 0 for v in found.values())
