"""Stand-in for arcface_torch's ``train_v2.py`` ``main()``, step by step, on CPU.

The order of operations and every hook call are those of the patched upstream script (see
``craft_plugin/patches/arcface_torch_hooks.patch``): ``config``, ``margin_loss``, ``partial_fc_class``,
``dataloader_factory`` and ``verification_class`` filters; ``on_train_start``, ``on_resume``,
``on_optimizer_step`` (real steps only), ``on_epoch_end``, ``on_save_checkpoint`` and
``on_train_end`` events. ``plugins=None`` means the installed plugins, as in a real run; ``[]``
is the unhooked upstream loop.

Differences from upstream, all device plumbing: no CUDA; DDP (``broadcast_buffers=False``) only
when a process group with more than one rank exists, without upstream's ``fp16_compress_hook`` and
static graph (backbone gradients are all-reduced in float32, so multi-process tests can compare
runs to float32 rounding); AMP runs through ``torch.autocast`` on the
tensors' device with ``torch.amp.GradScaler``; the mini-only ``cfg.stop_after_epoch`` ends the run
after that epoch's checkpoint, as a job killed there would (no ``on_train_end``); no wandb, no
per-step logging callback.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any, List, Optional

import torch
from torch.utils.data import DataLoader

from craft_plugin.errors import ConfigError
from craft_plugin._replica.backbone import get_model
from craft_plugin._replica.data import get_dataloader
from craft_plugin._replica.distributed_sampler import get_dist_info, setup_seed
from craft_plugin._replica.losses import CombinedMarginLoss
from craft_plugin._replica.lr_scheduler import PolynomialLRWarmup
from craft_plugin._replica.partial_fc import PartialFC_V2
from craft_plugin._replica.verification import CallBackVerification
from craft_plugin.atomic_save import atomic_save
from craft_plugin.plugin_hooks import HOOK_API, plugin_filter, plugin_hook


@dataclass
class TrainResult:
    cfg: Any
    backbone: torch.nn.Module
    partial_fc: torch.nn.Module
    optimizer: torch.optim.Optimizer
    lr_scheduler: Any
    global_step: int
    losses: List[float] = field(default_factory=list)


def summary_writer_for(cfg: Any, rank: int):
    if rank != 0:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        logging.warning("tensorboard is not installed: no TensorBoard logs")
        return None
    return SummaryWriter(log_dir=os.path.join(cfg.output, "tensorboard"))


def unwrap(backbone: torch.nn.Module) -> torch.nn.Module:
    return backbone.module if hasattr(backbone, "module") else backbone


def build_optimizer(cfg: Any, backbone: torch.nn.Module, partial_fc: torch.nn.Module):
    params = [{"params": backbone.parameters()}, {"params": partial_fc.parameters()}]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params=params, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params=params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise ConfigError("optimizer", cfg.optimizer, '"sgd" or "adamw"')


def train(cfg: Any, plugins: Optional[list] = None) -> TrainResult:
    cfg = plugin_filter("config", cfg, plugins=plugins, api=HOOK_API)
    setup_seed(cfg.seed)
    rank, world_size = get_dist_info()
    local_rank = rank
    os.makedirs(cfg.output, exist_ok=True)
    summary_writer = summary_writer_for(cfg, rank)

    train_loader = plugin_filter("dataloader_factory", get_dataloader, plugins=plugins, cfg=cfg)(
        cfg.rec, local_rank, cfg.batch_size, cfg.dali, cfg.dali_aug, cfg.seed, cfg.num_workers)

    backbone = get_model(cfg.network, dropout=0.0, fp16=cfg.fp16, num_features=cfg.embedding_size)
    if world_size > 1:
        backbone = torch.nn.parallel.DistributedDataParallel(
            module=backbone, broadcast_buffers=False, bucket_cap_mb=16, find_unused_parameters=True)
    backbone.train()

    margin_loss = CombinedMarginLoss(64, cfg.margin_list[0], cfg.margin_list[1], cfg.margin_list[2],
                                     cfg.interclass_filtering_threshold)
    margin_loss = plugin_filter("margin_loss", margin_loss, plugins=plugins, cfg=cfg)
    PartialFC = plugin_filter("partial_fc_class", PartialFC_V2, plugins=plugins, cfg=cfg)
    module_partial_fc = PartialFC(margin_loss, cfg.embedding_size, cfg.num_classes, cfg.sample_rate, False)
    module_partial_fc.train()
    opt = build_optimizer(cfg, backbone, module_partial_fc)

    cfg.total_batch_size = cfg.batch_size * world_size
    cfg.warmup_step = cfg.num_image // cfg.total_batch_size * cfg.warmup_epoch
    cfg.total_step = cfg.num_image // cfg.total_batch_size * cfg.num_epoch
    lr_scheduler = PolynomialLRWarmup(optimizer=opt, warmup_iters=cfg.warmup_step, total_iters=cfg.total_step)
    plugin_hook("on_train_start", plugins=plugins, cfg=cfg, backbone=backbone, partial_fc=module_partial_fc,
                optimizer=opt, lr_scheduler=lr_scheduler, summary_writer=summary_writer, rank=rank,
                world_size=world_size)

    start_epoch = 0
    global_step = 0
    if cfg.resume:
        # upstream's bare torch.load is weights_only=True on torch >= 2.6: plugin state must load so
        dict_checkpoint = torch.load(os.path.join(cfg.output, f"checkpoint_gpu_{rank}.pt"), weights_only=True)
        start_epoch = dict_checkpoint["epoch"]
        global_step = dict_checkpoint["global_step"]
        unwrap(backbone).load_state_dict(dict_checkpoint["state_dict_backbone"])
        module_partial_fc.load_state_dict(dict_checkpoint["state_dict_softmax_fc"])
        opt.load_state_dict(dict_checkpoint["state_optimizer"])
        lr_scheduler.load_state_dict(dict_checkpoint["state_lr_scheduler"])
        plugin_hook("on_resume", plugins=plugins, checkpoint=dict_checkpoint)
        del dict_checkpoint

    callback_verification = plugin_filter("verification_class", CallBackVerification, plugins=plugins, cfg=cfg)(
        val_targets=cfg.val_targets, rec_prefix=cfg.rec, summary_writer=summary_writer, wandb_logger=None)

    device_type = "cpu"
    amp = torch.amp.GradScaler(device_type, growth_interval=100, enabled=cfg.fp16)
    result = TrainResult(cfg, backbone, module_partial_fc, opt, lr_scheduler, global_step)
    stop = cfg.get("stop_after_epoch")
    for epoch in range(start_epoch, cfg.num_epoch):
        if isinstance(train_loader, DataLoader):
            train_loader.sampler.set_epoch(epoch)
        for _, (img, local_labels) in enumerate(train_loader):
            global_step += 1
            local_embeddings = backbone(img)
            loss: torch.Tensor = module_partial_fc(local_embeddings, local_labels)

            if cfg.fp16:
                amp.scale(loss).backward()
                if global_step % cfg.gradient_acc == 0:
                    amp.unscale_(opt)
                    torch.nn.utils.clip_grad_norm_(backbone.parameters(), 5)
                    amp.step(opt)
                    plugin_hook("on_optimizer_step", plugins=plugins, global_step=global_step,
                                optimizer=opt, scaler=amp)
                    amp.update()
                    opt.zero_grad()
            else:
                loss.backward()
                if global_step % cfg.gradient_acc == 0:
                    torch.nn.utils.clip_grad_norm_(backbone.parameters(), 5)
                    opt.step()
                    plugin_hook("on_optimizer_step", plugins=plugins, global_step=global_step,
                                optimizer=opt, scaler=None)
                    opt.zero_grad()
            # every micro-batch, outside the gradient_acc branch, as upstream's train_v2.py: the
            # schedule (total_step = num_image // total_batch_size * num_epoch) counts micro-batches.
            # With gradient_acc > 1 (or a first fp16 step GradScaler skips) the first call comes before
            # any optimizer.step(), and torch warns "lr_scheduler.step() before optimizer.step()" there
            # exactly as under upstream; the replica keeps that order on purpose
            lr_scheduler.step()
            result.losses.append(loss.item())
            if summary_writer is not None and global_step % cfg.frequent == 0:
                summary_writer.add_scalar("loss", loss.item(), global_step)
            if global_step % cfg.verbose == 0 and global_step > 0:
                callback_verification(global_step, backbone)

        plugin_hook("on_epoch_end", plugins=plugins, epoch=epoch, global_step=global_step)
        if cfg.save_all_states:
            checkpoint = {
                "epoch": epoch + 1,
                "global_step": global_step,
                "state_dict_backbone": unwrap(backbone).state_dict(),
                "state_dict_softmax_fc": module_partial_fc.state_dict(),
                "state_optimizer": opt.state_dict(),
                "state_lr_scheduler": lr_scheduler.state_dict(),
            }
            plugin_hook("on_save_checkpoint", plugins=plugins, checkpoint=checkpoint)
            atomic_save(checkpoint, os.path.join(cfg.output, f"checkpoint_gpu_{rank}.pt"))
        if rank == 0:
            atomic_save(unwrap(backbone).state_dict(), os.path.join(cfg.output, "model.pt"))
        result.global_step = global_step
        if stop is not None and epoch + 1 >= stop:
            return result

    if rank == 0:
        atomic_save(unwrap(backbone).state_dict(), os.path.join(cfg.output, "model.pt"))
    plugin_hook("on_train_end", plugins=plugins)
    if summary_writer is not None:
        summary_writer.close()
    result.global_step = global_step
    return result
