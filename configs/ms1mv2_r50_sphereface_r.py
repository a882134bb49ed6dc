# SphereFace-R (hard feature normalisation, v0) through craft-plugin, with CRAFT switched on by
# a dict of options. Dataset keys follow upstream's configs/ms1mv2_r50.py.
from easydict import EasyDict as edict

config = edict()
config.margin_loss = {"name": "sphereface-r", "magnitude": "v0", "norm": "hard", "s": 30.0, "m": 1.5, "lw": 50.0}
config.reactivation = {"every": 2000, "start": 2000, "threshold": 0.1}
config.network = "r50"
config.resume = False
config.output = None
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
