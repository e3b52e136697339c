"""Configuration of the unified model and its training run (one YAML file = one experiment).

A config has two parts: ``model`` (what is saved in every checkpoint and rebuilds the
network) and ``train`` (data, schedule, optimiser, budget). Unknown keys are errors, so
a typo never silently falls back to a default.

A config may start from another with ``extends: OTHER.yaml`` (a path relative to its own
folder) and list only what it changes: an ablation or a second seed then reads as the one
setting it differs in. ``model`` and ``train`` keys are merged one by one, the extending
file's winning; ``name`` and ``train.out_dir`` are never inherited (a variant must not write
into its parent's run folder): they default to the file's stem and ``runs/<name>``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from geoseg.errors import InputError
from geoseg.unified.config_checks import SELECT_ON, check_arch_name, check_model, check_train


@dataclass
class ModelConfig:
    """Architecture hyper-parameters (saved in the checkpoint)."""

    arch: str = "unigeoseg_tiny"
    channels: tuple[int, ...] = (32, 64, 128, 192)
    depths: tuple[int, ...] = (1, 2, 2, 1)
    fpn_dim: int = 64
    query_dim: int = 128
    heads: int = 4
    decoder_layers: int = 2
    tate: bool = True
    latent_memory: int = 4
    memory_lambda: float = 0.2
    prompt_map: bool = True
    class_memory: bool = False
    class_memory_slots: int = 4
    semantic_aux: bool = False  # auxiliary per-pixel class loss on the pyramid (training signal only)
    spatial_prior: bool = False  # query-conditioned Gaussian-bump prior added to the mask logits
    relation_anchor: bool = False  # query-derived anchor map + its grown surroundings at stride 8
    classes: tuple[str, ...] = ("land", "water", "building", "vegetation", "road")
    text_encoder: str = "all-MiniLM-L6-v2"
    text_dim: int = 384
    max_tokens: int = 128
    tile_size: int = 512      # the pixel size of a training tile
    input_size: int = 256     # the size a tile is resized to before the network (sets the working scale)

    @property
    def scale(self) -> float:
        """Resize factor from source pixels to network pixels."""
        return self.input_size / self.tile_size

    def module_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :class:`geoseg.models.UniGeoSeg`."""
        return dict(channels=self.channels, depths=self.depths, fpn_dim=self.fpn_dim, text_dim=self.text_dim,
                    query_dim=self.query_dim, heads=self.heads, decoder_layers=self.decoder_layers, tate=self.tate,
                    latent_memory=self.latent_memory, memory_lambdas=(0.0, self.memory_lambda, self.memory_lambda),
                    prompt_map=self.prompt_map,
                    class_memory_classes=len(self.classes) if self.class_memory else 0,
                    class_memory_slots=self.class_memory_slots,
                    semantic_classes=len(self.classes) if self.semantic_aux else 0,
                    spatial_prior=self.spatial_prior, relation_anchor=self.relation_anchor)


@dataclass
class TrainConfig:
    """Training run settings."""

    shards: str = "data/dubai"              # folder (or glob) of Parquet shards with train/val splits
    val_shards: str = ""                    # take the val split from this build instead (keeps validation fixed across data variants)
    # rows store absolute image paths; {old prefix: new prefix} finds the images after the shards and
    # imagery moved (another machine, a cluster, a GPU box), e.g. {/work/shared/data: /data/shared}
    image_path_map: dict[str, str] = field(default_factory=dict)
    # decoded tiles written by TileCache.save (geoseg train --pack): rows whose tile is there are
    # not read from the imagery, so a machine without GDAL or the imagery can train (a lent GPU box)
    tile_store: str = ""
    out_dir: str = "runs/default"
    seed: int = 0
    batch_size: int = 16
    # prompts decoded per image pass: a batch holds batch_size // k tiles with k rows each, so the image
    # encoder (44-60 % of a CPU step) runs once for k prompts, as SAM trains; 1 = one pass per row
    prompts_per_image: int = 1
    epochs: int = 6
    steps_per_epoch: int = 400
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    # progressive multi-task schedule: interactive weight goes from ``interactive_start`` to
    # ``interactive_end`` over the first ``ramp_frac`` of the steps; the rest is shared
    # between referring and reasoning in proportion ``reasoning_share``.
    progressive: bool = True
    interactive_start: float = 1.0
    interactive_end: float = 0.7
    ramp_frac: float = 0.4
    reasoning_share: float = 0.4
    augment: bool = True                   # dihedral flips (orientation-free instructions only) + photometric jitter
    shadow_aug: float = 0.0                # share of training samples given a random cast shadow (with augment)
    no_target_weight: float = 0.5
    mask_loss_on_empty: bool = True       # BCE pushes no-target rows' masks to zero (False: only the presence head learns them)
    no_target_share: float = 0.0           # chance that a referring/reasoning pick comes from that task's no-target rows (0 = uniform)
    dice_weight: float = 1.0
    bce_weight: float = 1.0
    class_memory_weight: float = 0.2
    semantic_weight: float = 0.5
    val_samples: int = 240                 # validation rows per epoch (balanced across tasks), 0 = all
    # which epoch is best: "fixed" = mean task gIoU at mask 0.5 / presence 0.5; "tuned" = at the
    # thresholds --tune-decision would pick on the same rows (how the exported model answers)
    select_on: str = "fixed"
    # decay of an exponential moving average of the weights (e.g. 0.998 ~ the last 500 steps); when
    # set, validation, best.pt and last.pt's weights are the average (0 = off: the raw weights)
    ema: float = 0.0
    # modules kept at their loaded weights, by module name (e.g. [backbone]: train the FPN, text path and
    # decoder on a fixed image encoder; a sub-module such as backbone.stem works too); BatchNorm statistics included
    freeze: tuple[str, ...] = ()
    max_minutes: float = 0.0               # wall-clock budget; 0 = none (the run stops cleanly at the budget)
    threads: int = 0                        # torch threads on CPU (0 = torch default)
    amp: bool = True                        # bf16/fp16 autocast on CUDA only
    # processes that build training batches beside the training loop (0 = in the loop, as on the 2-core CPU;
    # a GPU needs several to be fed); batches then follow the schedule a few steps late
    num_workers: int = 0
    log_every: int = 20
    init_from: str = ""                    # start from this checkpoint's weights (fine-tuning); optimiser and schedule start afresh
    # user-supplied image-encoder weights: a torch file holding the backbone's state dict (bare, under
    # "state_dict"/"model", or inside a whole-model state dict as backbone.*), loaded after init_from
    backbone_weights: str = ""


@dataclass
class ExperimentConfig:
    """A whole experiment: ``model`` + ``train`` + a name."""

    name: str = "default"
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_yaml(self) -> str:
        """Every setting of the experiment, ``extends`` resolved, as YAML that :func:`load_config` reads back."""
        import yaml

        def plain(v: Any) -> Any:
            if isinstance(v, dict):
                return {k: plain(x) for k, x in v.items()}
            return [plain(x) for x in v] if isinstance(v, (list, tuple)) else v

        return yaml.safe_dump(plain(self.to_dict()), sort_keys=False, default_flow_style=None, width=110)


def _fill(cls: type, data: dict[str, Any], where: str) -> Any:
    known = {f.name: f for f in fields(cls)}
    unknown = set(data) - set(known)
    if unknown:
        raise InputError(f"unknown key(s) {sorted(unknown)} in {where}", f"valid keys: {', '.join(sorted(known))}")
    kwargs = {}
    for k, v in data.items():
        default = getattr(cls(), k) if dataclasses.is_dataclass(cls) else None
        kwargs[k] = tuple(v) if isinstance(default, tuple) and isinstance(v, list) else v
    return cls(**kwargs)


def model_config_from_dict(data: dict[str, Any]) -> ModelConfig:
    """Rebuild a :class:`ModelConfig` from a dict: the architecture's registered defaults, then ``data``."""
    from geoseg.unified.build import default_config  # late: build imports this module

    data = dict(data)
    base = asdict(default_config(str(data.get("arch", "unigeoseg_tiny"))))
    unknown = set(data) - set(base)
    if unknown:
        raise InputError(f"unknown key(s) {sorted(unknown)} in the model config", f"valid keys: {', '.join(sorted(base))}")
    base.update(data)
    return _fill(ModelConfig, base, "the model config")


def _read_yaml(p: Path) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise InputError(f"cannot parse {p} ({exc})", "fix the YAML syntax") from exc
    if not isinstance(data, dict):
        raise InputError(f"{p} is not a mapping of name, model and train", "write the config as YAML keys")
    unknown = set(data) - {"name", "model", "train", "extends"}
    if unknown:
        raise InputError(f"unknown top-level key(s) {sorted(unknown)} in {p}", "use name, extends, model and train")
    for section in ("model", "train"):
        if not isinstance(data.get(section) or {}, dict):
            raise InputError(f"{section} in {p} is not a mapping", f"write {section}: as indented key: value lines")
    return data


def resolve_config_dict(path: str | Path, _chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The raw ``name`` / ``model`` / ``train`` mapping of a config file, its ``extends`` chain merged in."""
    p = Path(path)
    if not p.is_file():
        where = f" (extended by {_chain[-1]})" if _chain else ""
        raise InputError(f"config file {p} does not exist{where}", "pass --config configs/NAME.yaml")
    if p.resolve() in _chain:
        cycle = " -> ".join(str(c) for c in (*_chain, p.resolve()))
        raise InputError(f"config {p} extends itself ({cycle})", "make the chain of extends: keys end at a file without one")
    data = _read_yaml(p)
    model, train = dict(data.get("model") or {}), dict(data.get("train") or {})
    parent = data.get("extends")
    if parent is not None:
        if not isinstance(parent, str) or not parent:
            raise InputError(f"extends in {p} must be a file name", "write e.g. extends: unigeoseg_cw.yaml")
        base = resolve_config_dict(p.parent / parent, (*_chain, p.resolve()))
        base_train = {k: v for k, v in base["train"].items() if k != "out_dir"}
        model, train = {**base["model"], **model}, {**base_train, **train}
    name = str(data.get("name", p.stem))
    if parent is not None and "out_dir" not in train:
        train["out_dir"] = f"runs/{name}"
    return {"name": name, "model": model, "train": train}


def load_config(path: str | Path) -> ExperimentConfig:
    """Read an experiment YAML (``name``, ``extends``, ``model: {...}``, ``train: {...}``); every value is
    checked (:mod:`geoseg.unified.config_checks`)."""
    p = Path(path)
    data = resolve_config_dict(p)
    train = check_train(_fill(TrainConfig, data["train"], f"{p}: train"), str(p))
    check_arch_name(data["model"].get("arch", ModelConfig.arch), str(p))
    model = check_model(model_config_from_dict(data["model"]), str(p))
    return ExperimentConfig(name=data["name"], model=model, train=train)


__all__ = ["SELECT_ON", "ExperimentConfig", "ModelConfig", "TrainConfig", "check_model", "check_train", "load_config",
           "model_config_from_dict", "resolve_config_dict"]
