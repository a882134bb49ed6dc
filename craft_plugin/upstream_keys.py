"""Upstream config keys read by the parts craft-plugin replaces: each one honoured or refused.

A feature that replaces a part of arcface_torch's ``train_v2.py`` takes over every config key that
part would have read. :data:`REPLACED_KEYS` lists them, one row per key, with the part, the
plugin feature (its config key) that replaces it, and what the plugin does: ``honoured`` (the
value acts as it does upstream) or ``refused`` (values the plugin would ignore raise a
:class:`~craft_plugin.errors.ConfigError` naming the key). :func:`check_replaced_keys` runs the
refusals in the config hook, before anything is built. The parts:

- ``CombinedMarginLoss(64, *margin_list, interclass_filtering_threshold)`` (losses.py): replaced
  by the loss of ``config.margin_loss``;
- ``PartialFC_V2(margin_loss, embedding_size, num_classes, sample_rate, False)`` (partial_fc_v2.py;
  train_v2.py passes fp16=False): subclassed for ``config.margin_loss`` (norm-aware) and
  ``config.partial_fc`` (lean), same constructor and sampling;
- ``get_dataloader(rec, local_rank, batch_size, dali, dali_aug, seed, num_workers)`` (dataset.py)
  and ``CallBackVerification(val_targets, rec, ...)`` (utils/utils_callbacks.py): replaced by
  craft-plugin's reader when ``config.rec_reader`` enables it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Optional, Tuple

from craft_plugin.errors import ConfigError

DEFAULT_MARGIN_LIST = (1.0, 0.5, 0.0)  # configs/base.py's: present in every merged config


@dataclass(frozen=True)
class ReplacedKey:
    key: str
    part: str        # the upstream code that reads it
    feature: str     # the plugin feature (its config key) whose replacement reads it instead
    decision: str    # "honoured" or "refused ..." (when)
    how: str         # what the plugin does with it (the docs' table)
    check: Optional[Callable[[Any, Any], None]] = None  # (cfg, feature) -> None or ConfigError


def _check_margin_list(cfg: Any, feature: Any) -> None:
    value = cfg.get("margin_list")
    if value is None:  # not set (a config not merged over configs/base.py)
        return
    try:
        margins = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        margins = None
    same = feature.loss.upstream_margin_list()
    if margins == DEFAULT_MARGIN_LIST or (same is not None and margins == same):
        return
    spec = cfg.get("margin_loss")
    allowed = f"{DEFAULT_MARGIN_LIST} (configs/base.py's)"
    if same is not None and same != DEFAULT_MARGIN_LIST:
        allowed += f" or {same}, the margins of config.margin_loss"
    raise ConfigError("margin_list", value, f"{allowed}: config.margin_loss = {spec!r} replaces CombinedMarginLoss, "
                                            "the only reader of margin_list, so this value would be ignored; "
                                            "delete it from the job config or drop config.margin_loss")


def _check_dali(cfg: Any, feature: Any) -> None:
    if cfg.get("dali") and cfg.get("rec_reader") == "craft" and cfg.get("rec") != "synthetic":
        raise ConfigError("dali", cfg.get("dali"), 'False with config.rec_reader = "craft": craft-plugin\'s reader '
                                                  'has no DALI pipeline; set rec_reader = "auto" or "mxnet" to '
                                                  "train with upstream's DALI loader")


MARGIN, READER = "margin_loss", "rec_reader"
REPLACED_KEYS: Tuple[ReplacedKey, ...] = (
    ReplacedKey("margin_list", "CombinedMarginLoss", MARGIN, "refused unless (1.0, 0.5, 0.0) or the same loss",
                "accepted when it is the base config's (1.0, 0.5, 0.0) or the margins of an `arcface` / "
                "`cosface` margin_loss; any other value would be ignored, so it is a ConfigError",
                _check_margin_list),
    ReplacedKey("interclass_filtering_threshold", "CombinedMarginLoss", MARGIN, "honoured",
                "every plugin loss on both Partial FC paths: non-target cosines above it become 0 with zero "
                "gradient before the loss's margin (a number >= 0; 0 is off)"),
    ReplacedKey("embedding_size", "PartialFC_V2", MARGIN, "honoured",
                "the plugin's Partial FC classes are subclasses with upstream's constructor"),
    ReplacedKey("num_classes", "PartialFC_V2", MARGIN, "honoured",
                "as upstream's constructor (the reader also checks it against `property`)"),
    ReplacedKey("sample_rate", "PartialFC_V2", MARGIN, "honoured",
                "the base class's sample() on both paths"),
    ReplacedKey("fp16", "PartialFC_V2", MARGIN, "honoured",
                "as upstream: train_v2.py gives Partial FC fp16=False, config.fp16 reaches the backbone and "
                "GradScaler, which the plugin does not replace"),
    ReplacedKey("rec", "get_dataloader, CallBackVerification", READER, "honoured",
                "the `.rec` folder read, and where `<val_target>.bin` files are found"),
    ReplacedKey("batch_size", "get_dataloader", READER, "honoured", "the loader's batch size, drop_last as upstream"),
    ReplacedKey("seed", "get_dataloader", READER, "honoured",
                "the sampler's shuffle seed and the per-worker seeds, upstream's formula"),
    ReplacedKey("num_workers", "get_dataloader", READER, "honoured", "the loader's worker processes"),
    ReplacedKey("dali", "get_dataloader", READER, 'refused with rec_reader = "craft"',
                'with "auto" (mxnet not importable) upstream\'s DALI loader runs as without the plugin; with '
                '"craft" True is a ConfigError (the reader has no DALI pipeline)', _check_dali),
    ReplacedKey("dali_aug", "get_dataloader", READER, "honoured",
                "as upstream: read only by the DALI loader (dali = True), which stays upstream's"),
    ReplacedKey("val_targets", "CallBackVerification", READER, "honoured",
                "each name's `<rec>/<name>.bin` is loaded (a missing file is an error) and scored at "
                "upstream's image size (112, 112)"),
)


def check_replaced_keys(cfg: Any, features: Iterable[Any]) -> None:
    """ConfigError for the first key an enabled feature's replacement would drop."""
    enabled = {f.name: f for f in features}
    for row in REPLACED_KEYS:
        if row.check is not None and row.feature in enabled:
            row.check(cfg, enabled[row.feature])
