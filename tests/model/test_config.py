"""Experiment configs: validation of keys and values, ``extends`` chains, and the shipped configs."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pytest

from geoseg.errors import InputError
from geoseg.unified.config import load_config
from geoseg.unified.config import resolve_config_dict as load_config_dict

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.parametrize("text, named", [
    ("model:\n  chanels: [1, 2]\n", "chanels"),                       # unknown key
    ("train:\n  no_target_share: 1.5\n", "no_target_share"),          # out of range
    ("train:\n  image_path_map: [/a, /b]\n", "image_path_map"),       # not a mapping
    ("train:\n  select_on: best\n", "select_on"),                    # not a selection rule
    ("train:\n  shadow_aug: 2\n", "shadow_aug"),                     # not a share
    ("train:\n  ema: 1.0\n", "ema"),                                 # a decay of 1 never moves
    ("train:\n  freeze: backbone\n", "freeze"),                      # not a list
])
def test_config_rejects_bad_values_naming_the_key(tmp_path, text, named):
    p = tmp_path / "x.yaml"
    p.write_text(text)
    with pytest.raises(InputError, match=named):
        load_config(p)


@pytest.mark.parametrize("key, value, allowed", [
    ("lr", "-0.001", "a number > 0"),
    ("lr", "fast", "a number > 0"),
    ("lr", "0", "a number > 0"),
    ("batch_size", "0", "a whole number >= 1"),
    ("batch_size", "2.5", "a whole number >= 1"),
    ("epochs", "-1", "a whole number >= 1"),
    ("steps_per_epoch", "0", "a whole number >= 1"),
    ("max_minutes", "-1", "a number >= 0"),
    ("warmup_steps", "-1", "a whole number >= 0"),
    ("num_workers", "-2", "a whole number >= 0"),
    ("prompts_per_image", "0", "a whole number >= 1"),
    ("log_every", "0", "a whole number >= 1"),
    ("interactive_end", "1.5", "a number in [0, 1]"),
    ("ramp_frac", ".nan", "a number in [0, 1]"),
    ("weight_decay", "-0.1", "a number >= 0"),
    ("dice_weight", "-1", "a number >= 0"),
    ("seed", "-1", "a whole number in [0, 4294967295]"),
    ("epochs", "true", "a whole number >= 1"),
    ("amp", "1", "true or false"),
    ("out_dir", "null", "a path"),
])
def test_train_values_are_checked_at_load_time_naming_key_value_and_range(tmp_path, key, value, allowed):
    """Before, lr -0.001 and lr fast were torch tracebacks, batch_size 0 a numpy one, and epochs -1
    a "successful" run of 0 steps without a checkpoint."""
    p = tmp_path / "x.yaml"
    p.write_text(f"train:\n  {key}: {value}\n")
    with pytest.raises(InputError) as exc:
        load_config(p)
    msg = str(exc.value)
    assert "\n" not in msg and msg.startswith(f"train.{key} = ") and str(p) in msg
    assert allowed in msg


@pytest.mark.parametrize("key, value, allowed", [
    ("fpn_dim", "-4", "a whole number >= 1"),                  # torch: "negative dimension -4"
    ("query_dim", "wide", "a whole number >= 1"),
    ("heads", "0", "a whole number >= 1"),                     # torch: integer division by zero
    ("heads", "3", "does not divide model.query_dim 128"),     # torch: "embed_dim must be divisible by num_heads"
    ("heads", "8\n  fpn_dim: 60", "does not divide model.fpn_dim 60"),
    ("decoder_layers", "-1", "a whole number >= 0"),
    ("latent_memory", "-1", "a whole number >= 0"),            # silently trained without a memory
    ("memory_lambda", "1.5", "a number in [0, 1]"),            # trained with the read-out weighted 1.5
    ("memory_lambda", ".nan", "a number in [0, 1]"),
    ("class_memory_slots", "0", "a whole number >= 1"),
    ("text_dim", "0", "a whole number >= 1"),
    ("max_tokens", "0", "a whole number >= 1"),
    ("tile_size", "-512", "a whole number >= 1"),
    ("input_size", "100", "is not a multiple of 32"),
    ("input_size", "0", "a whole number >= 32"),
    ("channels", "[32, 64, 128]", "four whole numbers >= 2"),
    ("channels", "[32, -64, 128, 192]", "four whole numbers >= 2"),
    ("depths", "[1, 2, 2, 1.5]", "four whole numbers >= 0"),
    ("tate", "maybe", "true or false"),
    ("class_memory", "1", "true or false"),
    ("arch", "resnet50", "is not a known architecture"),
    ("arch", "[unigeoseg_tiny]", "is not a known architecture"),
    ("classes", "[]", "is not a list of class names"),
    ("classes", "water", "is not a list of class names"),
    ("classes", "[water, road, water]", "names water more than once"),
    ("text_encoder", "''", "is not a text encoder name"),
    # training, the text cache and inference encode with MiniLM whatever this said
    ("text_encoder", "bert-base-uncased", "is not supported: geoseg encodes instructions with all-MiniLM-L6-v2 only"),
])
def test_model_values_are_checked_at_load_time_naming_key_value_and_fix(tmp_path, key, value, allowed):
    """Before, each of these loaded: building the network then failed deep inside torch (a negative
    width, heads that do not divide it), or training went ahead with a meaningless model (λ 1.5)."""
    p = tmp_path / "x.yaml"
    p.write_text(f"model:\n  {key}: {value}\n")
    with pytest.raises(InputError) as exc:
        load_config(p)
    msg = str(exc.value)
    assert "\n" not in msg and msg.startswith(f"model.{key} = ") and str(p) in msg
    assert allowed in msg
    assert "(" in msg and msg.endswith(")")  # the fix, in brackets


@pytest.mark.parametrize("name", ["all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"])
def test_the_text_encoder_geoseg_uses_may_be_named(tmp_path, name):
    p = tmp_path / "x.yaml"
    p.write_text(f"model:\n  text_encoder: {name}\n")
    assert load_config(p).model.text_encoder == name


def test_model_numbers_are_read_as_the_kind_their_key_takes(tmp_path):
    p = tmp_path / "x.yaml"
    p.write_text("model:\n  memory_lambda: 0\n  channels: [8, 16, 24, 32]\n  classes: [water, road]\n")
    m = load_config(p).model
    assert m.memory_lambda == 0.0 and type(m.memory_lambda) is float
    assert m.channels == (8, 16, 24, 32) and m.classes == ("water", "road")


SHIPPED = [c for c in sorted(CONFIGS.glob("*.yaml")) + sorted((CONFIGS / "ablation_1200").glob("*.yaml"))
           if load_config_dict(c)["model"]]


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_every_shipped_model_section_passes_the_checks_and_builds(path):
    """The checks refuse nothing a shipped experiment uses, and what they accept builds a network."""
    from geoseg.unified.build import build_model
    from geoseg.unified.config import check_model

    cfg = load_config(path)
    check_model(cfg.model)
    assert sum(p.numel() for p in build_model(cfg.model).parameters()) > 0


def test_numbers_are_read_as_the_kind_their_key_takes(tmp_path):
    """YAML reads 1e-3 (no dot) as a string and 45 as an int: a float key takes both as numbers."""
    p = tmp_path / "x.yaml"
    p.write_text("train:\n  lr: 1e-3\n  max_minutes: 45\n  epochs: 2\n")
    t = load_config(p).train
    assert t.lr == 0.001 and type(t.lr) is float
    assert t.max_minutes == 45.0 and type(t.max_minutes) is float and type(t.epochs) is int


def test_shipped_configs_parse():
    cfgs = sorted(CONFIGS.glob("*.yaml"))
    assert len(cfgs) >= 5
    names = {load_config(c).name for c in cfgs}
    assert len(names) == len(cfgs)
    ablations = {c.stem: load_config(c) for c in cfgs}
    assert ablations["ablation_no_tate"].model.tate is False
    assert ablations["ablation_no_memory"].model.latent_memory == 0
    assert ablations["ablation_no_progressive"].train.progressive is False
    assert ablations["ablation_classwise_memory"].model.class_memory is True


def test_longer_ablation_variants_differ_from_their_baseline_only_in_the_ablated_setting():
    folder = CONFIGS / "ablation_1200"
    runs = {c.stem: asdict(load_config(c)) for c in sorted(folder.glob("*.yaml"))}
    base = runs.pop("baseline")
    assert base["train"]["epochs"] * base["train"]["steps_per_epoch"] == 1200
    expected = {"no_tate": ("model", "tate", False), "no_memory": ("model", "latent_memory", 0),
                "no_progressive": ("train", "progressive", False), "classwise_memory": ("model", "class_memory", True),
                "baseline_seed1": ("train", "seed", 1), "baseline_seed2": ("train", "seed", 2)}
    assert set(runs) == set(expected)
    for name, (section, key, value) in expected.items():
        run = runs[name]
        assert run[section][key] == value != base[section][key]
        assert run["train"]["out_dir"] == f"runs/ablation_1200/ablation_{name}"
        for sec in ("model", "train"):
            # where the run writes and how many CPU threads it uses are not model or training settings
            differing = {k for k in base[sec] if base[sec][k] != run[sec][k]} - {"out_dir", "threads"}
            assert differing == ({key} if sec == section else set())


def _write(folder: Path, name: str, text: str) -> Path:
    p = folder / name
    p.write_text(text)
    return p


def test_extends_merges_key_by_key_and_never_inherits_name_or_out_dir(tmp_path):
    _write(tmp_path, "base.yaml", "name: base\nmodel:\n  tate: false\n  latent_memory: 2\n"
                                  "train:\n  out_dir: runs/base\n  seed: 3\n  lr: 0.002\n  epochs: 5\n")
    _write(tmp_path, "mid.yaml", "extends: base.yaml\nmodel:\n  latent_memory: 0\ntrain:\n  seed: 4\n")
    leaf = load_config(_write(tmp_path, "leaf.yaml", "name: leaf_run\nextends: mid.yaml\ntrain:\n  epochs: 7\n"))
    base = load_config(tmp_path / "base.yaml")
    assert (leaf.model.tate, leaf.model.latent_memory) == (False, 0)          # one from each level
    assert (leaf.train.seed, leaf.train.lr, leaf.train.epochs) == (4, 0.002, 7)
    assert leaf.name == "leaf_run" and load_config(tmp_path / "mid.yaml").name == "mid"
    assert leaf.train.out_dir == "runs/leaf_run" != base.train.out_dir   # never the parent's run folder
    # everything not set anywhere in the chain keeps the dataclass default
    same = {k for k, v in asdict(base.train).items() if asdict(leaf.train)[k] == v}
    assert same == set(asdict(base.train)) - {"out_dir", "seed", "epochs"}


@pytest.mark.parametrize("files, named", [
    ({"a.yaml": "extends: b.yaml\n", "b.yaml": "extends: a.yaml\n"}, "extends itself"),
    ({"a.yaml": "extends: a.yaml\n"}, "extends itself"),
    ({"a.yaml": "extends: missing.yaml\n"}, "missing.yaml does not exist .extended by"),
    ({"a.yaml": "extends: [b.yaml]\n"}, "extends in"),
    ({"a.yaml": "extends: b.yaml\n", "b.yaml": "train:\n  lrr: 1\n"}, "lrr"),          # the parent's typo
    ({"a.yaml": "extends: b.yaml\ntrain:\n  ema: 1.0\n", "b.yaml": "name: b\n"}, "ema"),  # merged values validated
    ({"a.yaml": "model: [1, 2]\n"}, "model in"),
])
def test_bad_extends_chains_are_clear_errors(tmp_path, files, named):
    for name, text in files.items():
        _write(tmp_path, name, text)
    with pytest.raises(InputError, match=named):
        load_config(tmp_path / "a.yaml")


@pytest.mark.parametrize("reference, variants", [
    ("seed2", {"notate": ("model", "tate", False), "nomem": ("model", "latent_memory", 0),
               "prog": ("train", "progressive", True), "seed3": ("train", "seed", 13)}),
    ("seed3", {"nomem_seed3": ("model", "latent_memory", 0), "notate_seed3": ("model", "tate", False),
               "nocm_seed3": ("model", "class_memory", False), "prog_seed3": ("train", "progressive", True)}),
])
def test_full_budget_ablation_rows_differ_from_their_reference_run_only_in_the_ablated_setting(reference, variants):
    ref = asdict(load_config(CONFIGS / f"unigeoseg_cw_{reference}.yaml"))
    assert ref["train"]["epochs"] * ref["train"]["steps_per_epoch"] == 3328
    for name, (section, key, value) in variants.items():
        run = asdict(load_config(CONFIGS / f"unigeoseg_cw_{name}.yaml"))
        assert run[section][key] == value != ref[section][key]
        assert run["train"]["out_dir"] == f"runs/unigeoseg_cw_{name}"
        for sec in ("model", "train"):
            differing = {k for k in ref[sec] if ref[sec][k] != run[sec][k]} - {"out_dir", "threads"}
            assert differing == ({key} if sec == section else set())


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")) + sorted((CONFIGS / "ablation_1200").glob("*.yaml")),
                         ids=lambda p: p.stem)
def test_resolved_yaml_reads_back_to_the_same_experiment(path, tmp_path):
    cfg = load_config(path)
    out = _write(tmp_path, "resolved.yaml", cfg.to_yaml())
    assert "extends" not in out.read_text()
    assert asdict(load_config(out)) == asdict(cfg)


def test_cli_print_config_shows_the_resolved_settings_with_overrides_and_trains_nothing(tmp_path, capsys):
    import yaml

    from geoseg.cli import main

    base = _write(tmp_path, "base.yaml", "name: base\ntrain:\n  lr: 0.002\n  shards: data/a\n")
    child = _write(tmp_path, "child.yaml", "extends: base.yaml\nmodel:\n  tate: false\n")
    out_dir = tmp_path / "never_created"
    main(["train", "--config", str(child), "--out", str(out_dir), "--print-config"])
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["name"] == "child" and shown["model"]["tate"] is False
    assert shown["train"]["lr"] == 0.002 and shown["train"]["out_dir"] == str(out_dir)
    assert not out_dir.exists() and base.is_file()
