"""The config schema: one dataclass per section, with defaults; what ``--set`` keys exist.

``data.format`` names an entry of the format table (``segtrain.data.formats``); the checks
(``checks.py``) refuse any other name. Type hints here are what the loader enforces.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Union

from segtrain.loss_specs import DEFAULT_LOSS


@dataclass
class DataConfig:
    """Where the dataset is and how samples are decoded and augmented."""

    format: str  # a name in the format table: voc | camvid | folders | nifti | series | ...
    root: str
    num_classes: int
    sample: bool = False  # root is the built-in sample dataset: generate it there if missing
    classes: Union[str, list[str]] = "voc"  # a built-in table (voc, camvid, cityscapes, ade20k, coco_stuff), a table file or names
    colors: Union[list[list[int]], None] = None  # RGB per class, for custom datasets
    void_color: Union[list[int], None] = None  # RGB drawn for void (255)
    train_split: str = "train"
    val_split: str = "val"
    ignore_index: int = 255  # the dataset's own void value; mapped to 255 on decode
    label_map: dict[int, int] = field(default_factory=dict)  # raw value -> class, e.g. {255: 1}; on top of the format's own mapping
    # model.head: sigmoid: one output per region, in this order, e.g. {whole: [1, 2, 3, 4], core: [1, 3, 4], enhancing: [4]}
    regions: dict[str, list[int]] = field(default_factory=dict)
    image_dir: str = "JPEGImages"  # voc: images folder; folders: images folder
    mask_dir: str = "SegmentationClass"  # voc: mask folder; folders: masks folder
    # Training augmentation (albumentations). Validation only resizes/pads deterministically.
    crop: Union[list[int], None] = None  # [h, w] random crop (padded with void if smaller)
    crop_class_balance: float = 0.0  # share of training crops centred on a pixel of a class drawn uniformly among those present
    scale: list[float] = field(default_factory=lambda: [1.0, 1.0])  # random rescale range
    hflip: bool = True
    color_jitter: float = 0.0  # strength in [0, 1]; 0 disables
    vflip: bool = False  # vertical flip with p = 0.5
    rot90: bool = False  # a random multiple of 90 degrees
    rotate: float = 0.0  # random rotation in [-rotate, rotate] degrees (mask padded with void)
    shift: float = 0.0  # random shift up to this fraction of the height/width (mask padded with void)
    brightness: float = 0.0  # random brightness change up to this fraction in [0, 1]
    contrast: float = 0.0  # random contrast change up to this fraction in [0, 1]
    gamma: float = 0.0  # random gamma in [1 - gamma, 1 + gamma], gamma in [0, 1)
    noise: float = 0.0  # Gaussian noise, std up to this fraction of 255
    blur: float = 0.0  # Gaussian blur on half the samples, sigma up to this many pixels
    elastic: float = 0.0  # probability of an elastic distortion (alpha 100, sigma 10)
    grid_distortion: float = 0.0  # probability of a grid distortion (5 steps, limit 0.3)
    augment: list[dict[str, Any]] = field(default_factory=list)  # albumentations transforms: [{name: ..., p: ..., ...}]
    resize: Union[list[int], None] = None  # [h, w] fixed resize for train and val
    val_pad_to: int = 1  # pad validation images to a multiple of this (void-filled masks)
    num_parallel_calls: int = 0  # 0 = one per CPU core: batches decoding at once (tf.data), threads (NumPy loader)
    decode_processes: int = 0  # 2-D images: decode + augment in this many worker processes; 0 = on the threads above
    cache: bool = False  # keep decoded (image, mask) pairs in memory after their first read
    # Input channels: images 1 (grey), 2, 3 (RGB, the default) or 4 (RGBA); series: columns per
    # signal (default 1); nifti: the channel file names of a case, stacked in this order.
    channels: Union[int, list[str], None] = None
    label: Union[str, None] = None  # nifti: label file of a case; series: "{name}.labels.npy" or a change-point table (desc.txt)
    mask: Union[str, None] = None  # nifti only: region file (e.g. brainmask.nii.gz) that restricts z-scoring and patch sampling
    normalize: Literal["zscore", "none"] = "zscore"  # nifti/series: per-channel z-score (inside data.mask); none = already normalised
    patch: Union[list[int], None] = None  # nifti/series/geotiff: training patch (window) size, one value per spatial axis
    bands: Union[list[int], None] = None  # geotiff: the image bands (1-based) that are the model's channels, in order
    band_norm: Union[dict[str, list[float]], None] = None  # geotiff: {mean: [..], std: [..]} or {min: [..], max: [..]}, one per band
    foreground_fraction: float = 1 / 3  # nifti/series: share of patches centred on a foreground voxel (nnU-Net: 1/3)
    patches_per_case: int = 4  # nifti/series/geotiff: patches drawn from each case (scene) per epoch (an epoch = this x cases)
    cached_cases: int = 2  # nifti/series: decoded cases kept in memory at once (memory does not grow with the dataset)
    # nifti/series patch augmentation (segtrain.data.transforms.nd); the 2-D keys above do not apply.
    patch_flip: list[int] = field(default_factory=list)  # spatial axes flipped with p = 0.5, e.g. [0, 1, 2]
    patch_rot90: Union[list[int], None] = None  # the plane of random quarter turns, e.g. [0, 1] (axial for X, Y, Z)
    patch_zoom: float = 0.0  # spatial scale U[1 - z, 1 + z] about the patch centre (label nearest, void fill)
    patch_scale: float = 0.0  # intensity factor U[1 - s, 1 + s] per channel
    patch_shift: float = 0.0  # intensity offset U[-s, s] per channel (z-scored units)
    patch_gamma: float = 0.0  # gamma U[1 - g, 1 + g] per channel
    patch_noise: float = 0.0  # Gaussian noise, std U[0, n] (z-scored units)


@dataclass
class ModelConfig:
    """Which zoo model to build; the registry maps the name to a builder."""

    name: str = "segnet_basic"
    decoder: Union[str, None] = None  # unpool | resize_conv | transposed | bilinear; null = the model's default
    norm: str = "batch"  # batch | layer | group | instance | none
    width: int = 64  # base channel count where the model has one
    context: str = "basic"  # dilated_context: basic | large
    depth: int = 4  # unet: number of pools (total stride 2**depth)
    head: Literal["softmax", "sigmoid"] = "softmax"  # sigmoid: one binary output per data.regions entry (segtrain.heads)
    encoder: Union[str, None] = None  # unet: plain | vgg16 | resnet50 | mobilenetv2 | efficientnetb0 | keras_hub:<preset>; deeplabv3plus: resnet50 | mobilenetv2 | keras_hub:<preset>; null = the model's default
    encoder_weights: str = "none"  # segnet, dilated_*, deeplabv3plus, unet with an encoder: none | imagenet | path to a weights file
    output_stride: int = 16  # deeplabv3plus: 8 | 16
    preset: Union[str, None] = None  # keras_hub: a keras-hub ImageSegmenter preset name | local folder (save_to_preset) | hf://... | kaggle://...
    mean: Union[list[float], None] = field(default_factory=lambda: [123.675, 116.28, 103.53])
    std: Union[list[float], None] = field(default_factory=lambda: [58.395, 57.12, 57.375])


@dataclass
class OptimizerConfig:
    name: Literal["sgd", "adam", "adamw"] = "sgd"
    learning_rate: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 0.0
    clipnorm: Union[float, None] = None


@dataclass
class ScheduleConfig:
    name: Literal["constant", "poly", "cosine", "step"] = "constant"
    warmup_steps: int = 0
    power: float = 0.9  # poly
    step_size: int = 1000  # step: decay every N steps
    gamma: float = 0.1  # step: decay factor
    min_lr: float = 0.0  # poly / cosine floor


@dataclass
class PreciseBNConfig:
    """BatchNorm statistics recomputed over N training batches before validation/checkpoints (segtrain.precise_bn)."""

    batches: int = 16  # 0 = off (the running averages are kept)


@dataclass
class EarlyStoppingConfig:
    """Stop after ``patience`` validations without an improvement of at least ``min_delta`` (segtrain.early_stopping)."""

    metric: Literal["val_miou", "val_mdice", "val_pixel_accuracy", "val_mean_accuracy", "val_group_mdice"] = "val_miou"  # higher is better
    patience: int = 5  # validations (every train.val_every epochs), not epochs
    min_delta: float = 0.0


@dataclass
class EmaConfig:
    """An exponential moving average of the weights, validated and saved in their place (segtrain.weight_average)."""

    momentum: float = 0.999  # per optimizer update: average = momentum * average + (1 - momentum) * weights


@dataclass
class TimeBudgetConfig:
    """Train for a wall-clock budget: the step count is planned on this machine (segtrain.time_budget)."""

    minutes: float  # the whole run (setup, compile, training, precise BN, validation, checkpoints) ends within it
    probe_steps: int = 10  # training steps timed before planning (the first, which compiles, aside)


@dataclass
class TrainConfig:
    epochs: int = 10
    steps: Union[int, None] = None  # total steps; overrides epochs when set
    batch_size: int = 8
    seed: int = 0
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    class_weights: Union[str, list[float]] = "none"  # none | median_frequency | [w0, w1, ...]
    loss: list[dict[str, Any]] = field(default_factory=lambda: [dict(i) for i in DEFAULT_LOSS])  # see loss_specs
    val_every: int = 1  # validate every N epochs
    checkpoint_every_steps: int = 0  # 0 = only at epoch ends
    # auto: by hardware, see segtrain.precision; none = float32
    mixed_precision: Literal["auto", "none", "mixed_float16", "mixed_bfloat16"] = "auto"
    precise_bn: PreciseBNConfig = field(default_factory=PreciseBNConfig)
    jit_compile: bool = False
    deterministic: bool = False  # tf.config.experimental.enable_op_determinism
    distribute: Literal["none", "mirrored", "multi_worker"] = "none"
    accumulate_steps: int = 1  # micro-batches of batch_size per optimizer update (effective batch = product)
    # the validation figure that picks best.keras (segtrain.best_checkpoint); auto: val_group_mdice
    # when label groups are scored (a sigmoid head's data.regions, evaluate.groups), else val_miou
    best_metric: Literal["auto", "val_miou", "val_mdice", "val_pixel_accuracy", "val_mean_accuracy", "val_group_mdice"] = "auto"
    early_stopping: Union[EarlyStoppingConfig, None] = None  # null = train to the end
    ema: Union[EmaConfig, None] = None  # null = validate and save the raw weights
    time_budget: Union[TimeBudgetConfig, None] = None  # null = train.steps / train.epochs decide the length


@dataclass
class EvaluateConfig:
    """What `segtrain evaluate` scores besides every class: label groups, each as one binary class."""

    groups: dict[str, list[int]] = field(default_factory=dict)  # e.g. BRATS {whole_tumour: [1, 2, 3, 4], core: [1, 3, 4]}
    change_point_margin: float = 0.01  # 1-D series: change-point F1 margin, a fraction of each series' length (TSSB: 1 %)


@dataclass
class RuntimeConfig:
    """How a run behaves on restart (not what it trains: runs with different ``runtime`` are the same run)."""

    auto_resume: bool = False  # a plain re-run resumes the run of the same config that output_dir holds
    # Where the run is tracked (segtrain.tracking): csv (log.csv), tensorboard, mlflow, wandb.
    loggers: list[str] = field(default_factory=lambda: ["csv", "tensorboard"])
    log_images: int = 2  # val images shown as image | truth | prediction strips at each validation (0: none)
    experiment: str = "segtrain"  # the MLflow experiment / W&B project of the run
    mlflow_uri: Union[str, None] = None  # MLflow tracking URI; null: MLFLOW_TRACKING_URI, else MLflow's default


@dataclass
class Config:
    data: DataConfig
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    output_dir: str = "runs/default"
    source: str = "<dict>"  # the file this config came from (not a YAML key)
