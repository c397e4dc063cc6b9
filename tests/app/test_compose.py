"""Every option of every config group composes, and its ``_target_`` nodes build real objects."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from hydra.utils import get_object, instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf

from lightning_advkd.app.callback_list import instantiate_callbacks
from lightning_advkd.app.compat import DatasetShape, check_compatibility
from lightning_advkd.app.loggers import instantiate_loggers
from lightning_advkd.train import CONF_DIR

from .conftest import QUICK, compose_cfg, dataset_overrides, has_module, tiny_overrides

PLUGINS = {
    ("hydra/launcher", "slurm"): "hydra_plugins.hydra_submitit_launcher",
    ("sweep", "optuna"): "hydra_plugins.hydra_optuna_sweeper",
}


def options() -> Iterator[tuple[str, str]]:
    for path in sorted(CONF_DIR.rglob("*.yaml")):
        group = path.parent.relative_to(CONF_DIR).as_posix()
        if group != ".":
            yield group, path.stem


ALL_OPTIONS = list(options())


def select(group: str, option: str) -> list[str]:
    if group == "hydra":  # the primary config selects hydra/default.yaml itself
        return []
    return [f"{group}={option}"]


def needs_plugin(group: str, option: str) -> None:
    """The sweeper and launcher plugins are CI requirements (requirements/ci.txt): missing, their options fail."""
    module = PLUGINS.get((group, option))
    assert module is None or has_module(module), f"pip install -r requirements/ci.txt (needs {module})"


def targets(node: Any, path: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(node, DictConfig):
        for key in node:
            value = node._get_node(key)
            if key == "_target_":
                yield path, str(node[key])
            elif isinstance(value, (DictConfig, ListConfig)):
                yield from targets(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, ListConfig):
        for index, value in enumerate(node):
            yield from targets(value, f"{path}[{index}]")


def test_every_group_has_options() -> None:
    groups = {group for group, _ in ALL_OPTIONS}
    expected = {
        "paths",
        "dataset",
        "pair",
        "method",
        "optimizer",
        "discriminator",
        "regularizer",
        "teacher_training",
        "lr_scheduler",
        "trainer",
        "strategy",
        "logger",
        "callbacks",
        "experiment",
        "sweep",
        "debug",
        "hydra",
        "hydra/launcher",
    }
    assert expected <= groups


@pytest.mark.parametrize(("group", "option"), ALL_OPTIONS, ids=[f"{g}={o}" for g, o in ALL_OPTIONS])
def test_option_composes_and_targets_resolve(group: str, option: str, tmp_path: Path, data_root: Path) -> None:
    needs_plugin(group, option)
    if group == "dataset":
        cfg = compose_cfg([*QUICK, *dataset_overrides(option, data_root)], tmp_path)
    else:
        cfg = compose_cfg([*tiny_overrides(data_root), *select(group, option)], tmp_path)
    job = {key: cfg[key] for key in cfg if key != "hydra"}
    OmegaConf.to_container(OmegaConf.create(job), resolve=True)  # every interpolation resolves
    for path, target in targets(OmegaConf.create(job)):
        assert get_object(target) is not None, f"{path}: {target}"
    if group == "hydra/launcher":
        launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
        assert launcher["tasks_per_node"] == cfg.trainer.devices
        assert launcher["_target_"].endswith("SlurmLauncher")


def _shape(cfg: DictConfig) -> DatasetShape:
    datamodule = instantiate(cfg.dataset.datamodule)
    return DatasetShape.of(cfg.dataset.name, datamodule)


@pytest.mark.parametrize("option", [o for g, o in ALL_OPTIONS if g == "dataset"])
def test_dataset_builds_and_loads_a_batch(option: str, tmp_path: Path, data_root: Path) -> None:
    cfg = compose_cfg([*QUICK, *dataset_overrides(option, data_root), "dataset.datamodule.batch_size=4"], tmp_path)
    datamodule = instantiate(cfg.dataset.datamodule)
    datamodule.setup("fit")
    batch = next(iter(datamodule.train_dataloader()))
    images = batch[0] if isinstance(batch, (list, tuple)) else batch
    assert images.shape[1:] == (datamodule.in_chans, datamodule.image_size, datamodule.image_size)


@pytest.mark.parametrize("option", [o for g, o in ALL_OPTIONS if g == "pair"])
def test_pair_builds_both_networks(option: str, tmp_path: Path, data_root: Path) -> None:
    cfg = compose_cfg([*tiny_overrides(data_root), f"pair={option}"], tmp_path)
    channels, height, _ = cfg.pair.input_size
    side = min(height, 64)  # torchvision's ResNets pool adaptively: a small input checks the wiring quickly
    for role in ("teacher", "student"):
        model = instantiate(cfg.pair[role].model, num_classes=7, in_chans=channels).eval()
        with torch.no_grad():
            assert model(torch.zeros(1, channels, side, side)).shape == (1, 7)
    pairs = cfg.pair.attention_pairs
    assert pairs and all(len(p) == 2 for p in pairs)
    shape = DatasetShape(option, channels, height, 10)
    check_compatibility(OmegaConf.to_container(cfg.pair), shape, OmegaConf.to_container(cfg.method), "distill")


@pytest.mark.parametrize("option", [o for g, o in ALL_OPTIONS if g == "method"])
def test_method_builds_its_module_and_optimizers(option: str, tmp_path: Path, data_root: Path) -> None:
    cfg = compose_cfg([*tiny_overrides(data_root), f"method={option}"], tmp_path)
    shape = _shape(cfg)
    teacher = instantiate(cfg.pair.teacher.model, num_classes=10, in_chans=1)
    student = instantiate(cfg.pair.student.model, num_classes=10, in_chans=1)
    input_shape = [shape.in_chans, shape.image_size, shape.image_size]
    module = instantiate(cfg.method.module, teacher=teacher, student=student, num_classes=10, input_shape=input_shape)
    assert isinstance(module, get_object(cfg.method.module._target_.removesuffix(".from_pair")))
    assert set(cfg.method) == {"name", "module"}, "a method is its module node (and a name)"
    optimizers = module.configure_optimizers()
    assert optimizers


@pytest.mark.parametrize(
    "selection",
    [f"regularizer={o}" for g, o in ALL_OPTIONS if g == "regularizer"] + ["regularizer=[adversarial_samples,r1]"],
)
def test_regularizers_build_and_combine(selection: str, tmp_path: Path, data_root: Path) -> None:
    cfg = compose_cfg([*tiny_overrides(data_root), selection], tmp_path)
    callbacks = instantiate_callbacks(cfg, has_logger=False)
    regularizers = [type(cb).__name__ for cb in callbacks if type(cb).__module__ == "lightning_advkd.callbacks"]
    assert len(regularizers) == len(cfg.regularizer)
    if "[" in selection:
        assert regularizers == ["AdversarialSamples", "R1Penalty"]


@pytest.mark.parametrize("option", [o for g, o in ALL_OPTIONS if g == "discriminator"])
def test_discriminator_builds(option: str, tmp_path: Path, data_root: Path) -> None:
    cfg = compose_cfg([*tiny_overrides(data_root), f"discriminator={option}"], tmp_path)
    factory = instantiate(cfg.discriminator)  # a partial: the module completes it with the width it judges
    assert factory(64)(torch.zeros(3, 64)).shape == (3, 1)


@pytest.mark.parametrize("option", [o for g, o in ALL_OPTIONS if g in ("lr_scheduler", "teacher_training")])
def test_schedules_and_teacher_recipes_build(option: str, tmp_path: Path, data_root: Path) -> None:
    group = "lr_scheduler" if (CONF_DIR / "lr_scheduler" / f"{option}.yaml").is_file() else "teacher_training"
    cfg = compose_cfg([*tiny_overrides(data_root), f"{group}={option}"], tmp_path)
    if group == "lr_scheduler":
        optimizer = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=0.1)
        scheduler = instantiate(cfg.lr_scheduler)(optimizer)
        assert isinstance(scheduler, torch.optim.lr_scheduler.LRScheduler)
    else:
        model = instantiate(cfg.pair.teacher.model, num_classes=10, in_chans=1)
        module = instantiate(cfg.teacher_training.module, model=model, num_classes=10)
        assert module.model is model


@pytest.mark.parametrize(
    "selection",
    [f"strategy={o}" for g, o in ALL_OPTIONS if g == "strategy"]
    + [f"trainer={o}" for g, o in ALL_OPTIONS if g == "trainer"],
)
def test_trainer_builds_with_each_strategy(selection: str, tmp_path: Path, data_root: Path) -> None:
    cfg = compose_cfg([*tiny_overrides(data_root), selection], tmp_path)
    if cfg.trainer.accelerator == "gpu" and not torch.cuda.is_available():
        assert cfg.trainer.strategy in ("auto", "ddp_find_unused_parameters_true")  # composes; building needs a GPU
        pytest.skip("no GPU here")
    trainer = instantiate(cfg.trainer, logger=False)
    assert trainer.world_size == cfg.trainer.devices * cfg.trainer.num_nodes


@pytest.mark.parametrize("option", [o for g, o in ALL_OPTIONS if g in ("callbacks", "logger")])
def test_callbacks_and_loggers_build(option: str, tmp_path: Path, data_root: Path) -> None:
    group = "callbacks" if (CONF_DIR / "callbacks" / f"{option}.yaml").is_file() else "logger"
    cfg = compose_cfg([*tiny_overrides(data_root), f"{group}={option}", "regularizer=none"], tmp_path)
    if group == "callbacks":
        built = instantiate_callbacks(cfg, has_logger=True)
        assert len(built) == sum(1 for node in (cfg.callbacks or {}).values() if node is not None)
    else:
        loggers = instantiate_loggers(cfg)
        assert len(loggers) == len(cfg.logger or {})


def test_logger_list_builds_all(tmp_path: Path, data_root: Path) -> None:
    cfg = compose_cfg([*tiny_overrides(data_root), "logger=[wandb,csv,tensorboard]"], tmp_path)
    names = sorted(type(logger).__name__ for logger in instantiate_loggers(cfg))
    assert names == ["CSVLogger", "TensorBoardLogger", "WandbLogger"]


def test_sweep_grids_name_existing_pairs(tmp_path: Path, data_root: Path) -> None:
    for option in ("fmnist_pairs", "cifar100_pairs"):
        cfg = compose_cfg([*tiny_overrides(data_root), f"sweep={option}"], tmp_path)
        for pair in str(cfg.hydra.sweeper.params.pair).split(","):
            assert (CONF_DIR / "pair" / f"{pair}.yaml").is_file(), pair


def test_regularizers_attach_only_to_a_method_with_a_discriminator(tmp_path: Path, data_root: Path) -> None:
    for method, expected in (("anc", ["R1Penalty"]), ("kd", [])):
        cfg = compose_cfg([*tiny_overrides(data_root), f"method={method}", "regularizer=r1"], tmp_path / method)
        built = [type(cb).__name__ for cb in instantiate_callbacks(cfg, has_logger=False)]
        assert [name for name in built if name == "R1Penalty"] == expected, method


def test_one_optimizer_recipe_for_every_method(tmp_path: Path, data_root: Path) -> None:
    for method in ("anc", "kd", "supervised"):
        cfg = compose_cfg([*tiny_overrides(data_root), f"method={method}", "optimizer.lr=0.123"], tmp_path / method)
        node = cfg.method.module
        optimizer = node.get("student_optimizer") or node.get("optimizer")
        assert optimizer.lr == 0.123 and optimizer._target_ == "torch.optim.SGD", method
