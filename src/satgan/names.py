"""File names inside each stage's output folder, defined once.

The folders themselves are the ``paths`` section of params.yaml (templated into dvc.yaml);
these are the names a stage writes there and a later stage reads. A module that writes or
reads one of these files imports the name from here instead of spelling the literal.
"""

# download -> data/raw
MANIFEST = "manifest.csv"
TILES_DIR = "tiles"
JOURNAL = ".journal.jsonl"

# validate -> data/validated
ACCEPTED = "accepted.csv"
REJECTED = "rejected.csv"
VALIDATE_REPORT = "report.json"
REJECTED_SHEET = "rejected.png"

# prepare -> data/prepared (each .npy has a .json sidecar beside it)
TRAIN_TILES = "tiles.npy"
HOLDOUT_TILES = "holdout.npy"
TRAIN_LABELS = "labels.npy"  # labelled data only: int64 class index per row of tiles.npy (classes: the sidecars)
HOLDOUT_LABELS = "holdout_labels.npy"  # labelled data only: the same for holdout.npy
VALIDATION_TILES = "validation.npy"  # prepare.validation_fraction > 0: real tiles for choosing recipes, apart from holdout.npy (which certifies)
VALIDATION_LABELS = "validation_labels.npy"  # labelled data only: the same for validation.npy
# Each sidecar may carry "boxes": per row, [scene, x0, y0, x1, y1] in source pixels (tiles with a
# position), so evaluation can keep tiles that share pixels together; absent when positions are unknown.
SIDECAR_BOXES = "boxes"
PREVIEW = "preview.png"

# train -> data/model, data/checkpoints
MODEL_CARD = "model.json"
MODEL_CARD_MD = "MODEL_CARD.md"  # the human-readable card (train: data/model; evaluate: with its evaluation, data/eval)
GENERATOR = "generator.safetensors"
GENERATOR_EMA = "generator_ema.safetensors"
DISCRIMINATOR = "discriminator.safetensors"
CHECKPOINT = "checkpoint.pt"

# train -> data/live: dvclive image series, each a folder of <step>.png under plots/images/
LIVE_SAMPLES = "samples"  # the fixed-noise sample grid of the sampling G
LIVE_D_VIEW = "d_view"  # train.d_view: the real (left) and fake (right) batch exactly as D received them

# generate -> data/samples
SAMPLES = "samples.npy"
SAMPLES_PNG_DIR = "png"
SAMPLE_GRID = "grid.png"
INTERPOLATION = "interpolation.png"
SAMPLES_CLASSES_DIR = "classes"  # always written: CLASSES_INFO; for a conditional model also the per-class files below
CLASSES_INFO = "classes.json"  # {"conditional": "none" | "projection" | "acgan", "classes": [names, in label order]}
SAMPLE_LABELS = "labels.npy"  # conditional models only: int64 class index per row of samples.npy
CLASS_GRID = "grid.png"  # conditional models only: one row of samples per class
CLASS_INTERPOLATION = "interpolation.png"  # conditional models only: latent interpolations within each class

# evaluate -> data/eval
METRICS = "metrics.json"
FID_KID = "fid_kid.json"
EVAL_MODEL_CARD = "model_card.json"
QUIZ = "quiz.html"
TURING_KEY = "turing_key.json"
TURING_GRID = "turing_grid.png"
CLOSEST_PAIRS = "closest_pairs.png"
FLOOR_CACHE = "floor_cache.json"  # the floor of the last run, reused while its tiles, params and code are unchanged
