# An arcface_torch job config using craft-plugin: copy it into your checkout's configs/ (or set
# the same keys in your own config). Dataset keys follow upstream's configs/ms1mv2_r50.py.
from easydict import EasyDict as edict

config = edict()
config.preset = "elasticface-arc+craft"   # ElasticFace-Arc (official s=64 m=0.5 sigma=0.05) + CRAFT defaults
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
