# CRAFT on vs off in the paper's setting (MS1MV2, ResNet-50, ArcFace s=64 m=0.5, same seed), for
# users with GPUs. Copy this file into your patched arcface_torch checkout's configs/ and run both
# arms with the same seed (config.seed), each into its own work_dirs/ folder:
#   CRAFT=off torchrun --nproc_per_node=8 train_v2.py configs/ms1mv2_r50_arcface_craft_ab
#   CRAFT=on  torchrun --nproc_per_node=8 train_v2.py configs/ms1mv2_r50_arcface_craft_ab
# then compare the lfw/cfp_fp/agedb_30 accuracies in the logs and the inactive conv1 filters with
# `craft-plugin inspect work_dirs/ms1mv2_r50_arcface_craft_{off,on}/model.pt`.
# ResNet-100: set config.network = "r100". Dataset keys follow upstream's configs/ms1mv2_r50.py.
import os

from easydict import EasyDict as edict

from craft_plugin.errors import ConfigError

arm = os.environ.get("CRAFT", "on")
if arm not in ("on", "off"):
    raise ConfigError("CRAFT (environment variable)", arm, '"on" or "off"')

config = edict()
config.margin_loss = {"name": "arcface", "s": 64.0, "m": 0.5}   # upstream's margin_list (1.0, 0.5, 0.0)
config.reactivation = "craft" if arm == "on" else None          # our defaults (docs/craft.md)
config.seed = 2048
config.network = "r50"
config.resume = False
config.output = f"work_dirs/ms1mv2_r50_arcface_craft_{arm}"
config.embedding_size = 512
config.sample_rate = 1.0
config.fp16 = True
config.momentum = 0.9
config.weight_decay = 5e-4
config.batch_size = 128
config.lr = 0.1
config.verbose = 2000
config.dali = False

config.rec = "/train_tmp/faces_emore"
config.num_classes = 85742
config.num_image = 5822653
config.num_epoch = 20
config.warmup_epoch = 0
config.val_targets = ["lfw", "cfp_fp", "agedb_30"]
