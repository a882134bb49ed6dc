"""The CRAFT controller: when to check, what to revive, and keeping ranks identical.

It counts real optimizer steps (a GradScaler-skipped step is not one) and checks at
``every``-step multiples and at epoch ends inside ``[start, stop]``. A check scores the filters
of the first conv (weight norms, or with the ``activation`` criterion the mean |BatchNorm output|
on the batch of the step just taken, averaged over ranks), revives up to ``max_revive`` inactive
filters (weakest first) with the configured strategy (``random`` with a warning when no filter
is live), then rank 0's layer, follower parameters and their optimizer state are broadcast so
every rank holds the same bytes. Each check is logged and, on rank 0, written to TensorBoard
with a picture of the filters.

With the ``activation`` criterion a forward hook is armed after the step before a check and
removed at the check, so no hook exists between checks. An epoch-end check needs a batch: it
arms the hook and runs after the next real step (it is in the checkpoint if one is saved in
between); after the last epoch no step follows, the check does not run and the armed hook stays
on the BatchNorm, where eval-mode forwards (export, verification) do not touch it.
"""
from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional

import torch
from torch import distributed

from craft_plugin.reactivation.capture import ActivationCapture
from craft_plugin.reactivation.detection import Criterion, activation_scores, filter_norms, inactive_mask
from craft_plugin.reactivation.grid import filter_grid
from craft_plugin.reactivation.layer import FirstLayer
from craft_plugin.reactivation.options import ReactivationOptions
from craft_plugin.reactivation.reviver import ADAM_KEYS, apply_revival
from craft_plugin.reactivation.strategies import STRATEGIES

log = logging.getLogger("craft_plugin.reactivation")


class Reactivator:
    def __init__(self, options: ReactivationOptions, layer: FirstLayer,
                 optimizer: Optional[torch.optim.Optimizer] = None, summary_writer: Any = None,
                 world_size: int = 1):
        self.options = options
        self.layer = layer
        self.optimizer = optimizer
        self.summary_writer = summary_writer
        self.world_size = world_size
        self.criterion = Criterion(options.criterion, options.threshold, options.reference_quantile)
        self.generator = torch.Generator().manual_seed(options.seed)
        self.steps = 0
        self.history: List[Dict[str, Any]] = []
        self.capture = (ActivationCapture(layer.bn if layer.bn is not None else layer.conv)
                        if self.criterion.uses_activations else None)
        self.pending: Optional[str] = None   # activation: an epoch-end check waiting for a batch
        self.arm_if_due()

    def in_window(self, step: int) -> bool:
        stop = self.options.stop
        return step >= self.options.start and (stop is None or step <= stop)

    def due(self, step: int) -> bool:
        every = self.options.every
        return bool(every) and step % every == 0 and self.in_window(step)

    def arm_if_due(self) -> None:
        """Activation criterion: capture the next step's batch when a check follows it."""
        if self.capture is None:
            return
        if self.pending or self.due(self.steps + 1):
            self.capture.arm()
        else:
            self.capture.take()

    def step(self) -> Optional[dict]:
        """One real optimizer step has been taken."""
        self.steps += 1
        reason = "step" if self.due(self.steps) else self.pending
        self.pending = None
        record = self.check(reason) if reason else None
        self.arm_if_due()
        return record

    def epoch_end(self) -> Optional[dict]:
        if not (self.options.at_epoch_end and self.in_window(self.steps)):
            return None
        if self.capture is None:
            return self.check("epoch_end")
        self.pending = "epoch_end"
        self.arm_if_due()
        return None

    def activation_scores(self) -> torch.Tensor:
        """Scores of the captured batch, averaged over ranks so that every rank revives the same filters."""
        mean_abs = self.capture.take()
        if mean_abs is None:
            raise RuntimeError(f"craft: the activation criterion found no training batch through "
                               f"{self.layer.name}'s BatchNorm since the check was armed")
        if self.world_size > 1 and distributed.is_initialized():
            distributed.all_reduce(mean_abs)
            mean_abs = mean_abs / self.world_size
        return activation_scores(mean_abs).cpu()  # a check step: one sync, as for the weight

    def check(self, reason: str) -> dict:
        weight = self.layer.conv.weight.detach().float().cpu()  # a check step, not every step: one sync
        norms = filter_norms(weight)
        scores = self.activation_scores() if self.capture is not None else norms
        mask = inactive_mask(scores, self.criterion)
        inactive = torch.nonzero(mask).view(-1)
        revive = inactive[scores[inactive].argsort()][: self.options.max_revive].tolist()
        live = torch.nonzero(~mask).view(-1)
        record = {"step": self.steps, "reason": reason, "inactive": inactive.tolist(),
                  "fraction": len(inactive) / norms.numel(), "revived": revive,
                  "strategy": self.options.strategy,
                  "norm_min": float(norms.min()), "norm_median": float(norms.median()),
                  "norm_max": float(norms.max())}
        if revive:
            record["strategy"] = self.revive(weight, revive, live)
        self.synchronise(bool(revive))
        self.history.append(record)
        self.report(record)
        return record

    def revive(self, weight: torch.Tensor, rows: List[int], live: torch.Tensor) -> str:
        name = self.options.strategy
        if not len(live) and name != "random":
            log.warning("craft: every filter of %s is inactive; falling back to the random strategy",
                        self.layer.name)
            name = "random"
        filters = STRATEGIES.get(name)(weight, live, len(rows), self.generator, self.options)
        apply_revival(self.layer, self.optimizer, rows, filters, live.to(self.layer.conv.weight.device),
                      self.options.reset_followers)
        return name

    def synced_tensors(self) -> List[torch.Tensor]:
        params = [self.layer.conv.weight]
        if self.layer.bn is not None and self.layer.bn.affine:
            params += [self.layer.bn.weight, self.layer.bn.bias]
        if self.layer.prelu is not None:
            params.append(self.layer.prelu.weight)
        tensors = [p.data for p in params]
        if self.optimizer is not None:
            for p in params:
                state = self.optimizer.state.get(p, {})
                tensors += [state[k] for k in ("momentum_buffer",) + ADAM_KEYS
                            if isinstance(state.get(k), torch.Tensor)]
        return tensors

    def synchronise(self, changed: bool) -> None:
        """Make every rank hold rank 0's values of everything a revival touches."""
        if self.world_size == 1 or not distributed.is_initialized():
            return
        device = self.layer.conv.weight.device
        flag = torch.tensor([int(changed)], device=device)
        distributed.broadcast(flag, 0)
        if flag.item():
            for tensor in self.synced_tensors():
                distributed.broadcast(tensor, 0)

    def report(self, record: dict) -> None:
        log.info("craft: step %d (%s): %d/%d filters of %s inactive (%.1f%%), revived %s with %s; "
                 "norms min %.3g median %.3g max %.3g", record["step"], record["reason"],
                 len(record["inactive"]), self.layer.conv.out_channels, self.layer.name,
                 100 * record["fraction"], record["revived"], record["strategy"], record["norm_min"],
                 record["norm_median"], record["norm_max"])
        if self.summary_writer is not None:
            step = record["step"]
            self.summary_writer.add_scalar("craft/inactive_fraction", record["fraction"], step)
            self.summary_writer.add_scalar("craft/revived", len(record["revived"]), step)
            revived = {i: [step] for i in record["revived"]}
            picture = filter_grid(self.layer.conv.weight, [i for i in record["inactive"] if i not in revived],
                                  f"{self.layer.name} after CRAFT's check at step {step}", revived,
                                  self.criterion.in_words())
            self.summary_writer.add_image("craft/first_layer_filters", picture, step, dataformats="HWC")

    def state_dict(self) -> dict:
        return {"steps": self.steps, "generator": self.generator.get_state(),
                "history": [dict(r) for r in self.history], "pending": self.pending}

    def load_state_dict(self, state: dict) -> None:
        self.steps = int(state["steps"])
        self.generator.set_state(state["generator"])
        self.history = [dict(r) for r in state["history"]]
        self.pending = state.get("pending") if self.capture is not None else None
        self.arm_if_due()
