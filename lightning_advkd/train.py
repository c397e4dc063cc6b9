"""The Hydra entry point: ``advkd-train`` or ``python -m lightning_advkd.train``, configs in the repository's ``conf/``.

With no arguments it runs the main job: Adversarial Network Compression on the offline Fashion-MNIST, on the CPU. The
teacher is trained once with labels and cached (``<paths.cache_dir>/teachers/``), the student learns from it without
labels, and a summary table compares the two. Everything is built from the config's ``_target_`` nodes.

Tasks (``task=``):
    distill: (default) get the teacher (``pair.teacher.checkpoint``, the cache, or trained now and cached), train the
        student with ``method=``, test both, print and save the summary. ``ckpt_path=`` resumes a distillation run.
    teacher: train (or find in the cache) the teacher only, test it, print where it is saved.
    evaluate: test the distillation checkpoint ``ckpt_path=`` against its teacher, with the summary.

Examples:
    advkd-train                                          # the main job
    advkd-train method=kd trainer.max_epochs=20          # another method
    advkd-train regularizer=[adversarial_samples,r1]     # several discriminator regularizers
    advkd-train experiment=cifar100_resnet56_resnet20   # a row of the CIFAR-100 table
    advkd-train -m pair=resnet14_lenet5,nin_lenet5       # a grid, one run directory and W&B run per job
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from hydra.utils import get_class, instantiate
from lightning.pytorch.callbacks import Callback, LearningRateMonitor, ProgressBar
from lightning.pytorch.loggers import Logger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch import nn

from lightning_advkd.app.compat import DatasetShape, IncompatibleConfigError, check_compatibility
from lightning_advkd.app.data import TeacherOutputDataModule
from lightning_advkd.app.summary import (
    TABLE_COLUMNS,
    build_reports,
    compression_ratio,
    evaluate_pair,
    format_table,
    standalone,
    table_rows,
    write_summary,
)
from lightning_advkd.app.teachers import (
    MissingTeacherError,
    cached_teacher_path,
    load_teacher,
    read_teacher_meta,
    recipe_key,
    save_teacher,
    teacher_recipe,
)
from lightning_advkd.app.wandb_setup import finish_wandb, register_resolvers, run_identity
from lightning_advkd.features import FeatureTap, static_feature_width

log = logging.getLogger("lightning_advkd.train")

#: The repository's config folder (the package is installed in development mode from the checkout).
CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
TASKS = ("distill", "teacher", "evaluate")

register_resolvers()


# ---------------------------------------------------------------------------------------------------- entry points


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Run one job of the config and return its ``optimized_metric`` (for sweepers such as Optuna)."""
    metrics = run(cfg)
    return optimized_value(cfg, metrics)


def run(cfg: DictConfig) -> dict[str, float]:
    """Run the job the composed ``cfg`` describes; the core of :func:`main`, callable from tests.

    The W&B run (if any) is finished whatever happens, with a failing exit code when the job raises, so every job of a
    sweep gets its own complete run.

    Returns:
        The final metrics (``test/...`` and the last ``val/...``) as floats.
    """
    register_resolvers()
    start = time.perf_counter()
    exit_code = 1
    try:
        metrics = _run(cfg)
        exit_code = 0
        return metrics
    finally:
        sync_hint = finish_wandb(exit_code)
        if sync_hint and rank_zero_only.rank == 0:
            log.info("W&B run saved offline; upload it when online with:\n  %s", sync_hint)
        log.info("%s finished in %.1f s (exit code %d)", cfg.get("task"), time.perf_counter() - start, exit_code)


def optimized_value(cfg: DictConfig, metrics: dict[str, float]) -> float | None:
    """The value of ``cfg.optimized_metric`` in ``metrics``.

    Raises:
        KeyError: When a distillation run did not produce the metric (the message lists the ones it did).
    """
    name = cfg.get("optimized_metric")
    if not name:
        return None
    if name not in metrics:
        if cfg.get("task") != "distill":
            log.warning("optimized_metric %r is not produced by task=%s", name, cfg.get("task"))
            return None
        raise KeyError(f"optimized_metric {name!r} was not produced; available: {sorted(metrics)}")
    return float(metrics[name])


# ---------------------------------------------------------------------------------------------------- the job


def _run(cfg: DictConfig) -> dict[str, float]:
    task = cfg.task
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    output_dir = Path(cfg.paths.output_dir)
    _save_resolved_config(cfg, output_dir)
    L.seed_everything(cfg.seed, workers=True)
    _check_launch(cfg)

    datamodule = _instantiate("datamodule", cfg.dataset.datamodule)
    shape = DatasetShape.of(cfg.dataset.name, datamodule)
    check_compatibility(_plain(cfg.pair), shape, _plain(cfg.method), task, other_pairs=_pair_input_sizes())
    num_classes = int(cfg.pair.get("num_classes") or shape.num_classes)

    if task == "teacher":
        return _teacher_task(cfg, shape, num_classes, output_dir)
    student = _build_model(cfg.pair.student.model, num_classes, shape.in_chans, "student")
    teacher, teacher_info = _obtain_teacher(cfg, shape, num_classes, output_dir, allow_training=task == "distill")
    if task == "evaluate":
        return _evaluate_task(cfg, datamodule, teacher, student, shape, num_classes, teacher_info, output_dir)
    return _distill_task(cfg, datamodule, teacher, student, shape, num_classes, teacher_info, output_dir)


def _distill_task(
    cfg: DictConfig,
    datamodule: Any,
    teacher: nn.Module,
    student: nn.Module,
    shape: DatasetShape,
    num_classes: int,
    teacher_info: dict[str, Any],
    output_dir: Path,
) -> dict[str, float]:
    kind = cfg.method.kind
    # Seeded again: the student's training draws the same random numbers whether the teacher was just trained in
    # this process or loaded from the cache, so a rerun with a cached teacher reproduces the first run.
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    loggers = _instantiate_loggers(cfg)
    _log_config(loggers, cfg)  # starts the W&B run: the config is recorded even if building fails below
    callbacks = _instantiate_callbacks(cfg, kind, has_logger=bool(loggers))
    module = _build_module(cfg, teacher, student, num_classes, shape)
    data = _maybe_teacher_outputs(cfg, datamodule, teacher, kind)
    trainer = _instantiate("trainer", cfg.trainer, callbacks=callbacks, logger=loggers or False)
    log.info("Training the student (%s, method %s)", cfg.pair.student.model.name, cfg.method.name)
    trainer.fit(module, datamodule=data, ckpt_path=cfg.get("ckpt_path"))
    metrics = _metrics(trainer)
    if cfg.get("test_after_fit", True):
        log.info("Testing teacher and student")
        trainer.test(module, datamodule=data, verbose=False)
        metrics.update(_metrics(trainer))
    metrics = _complete_metrics(cfg, metrics, teacher, student, datamodule, trainer)
    checkpoint = _best_checkpoint(trainer)
    if trainer.is_global_zero:
        student_path = output_dir / "student.pt"
        exported = module.export_student() if hasattr(module, "export_student") else standalone(student)
        torch.save(exported.state_dict(), student_path)
        _log_student_artifact(cfg, loggers, student_path, metrics)
        _summarize(
            cfg,
            loggers,
            teacher,
            student,
            shape,
            metrics,
            output_dir,
            {"teacher": teacher_info, "checkpoint": checkpoint, "student_state_dict": str(student_path)},
        )
    return metrics


def _evaluate_task(
    cfg: DictConfig,
    datamodule: Any,
    teacher: nn.Module,
    student: nn.Module,
    shape: DatasetShape,
    num_classes: int,
    teacher_info: dict[str, Any],
    output_dir: Path,
) -> dict[str, float]:
    ckpt_path = cfg.get("ckpt_path")
    if not ckpt_path:
        raise ValueError(
            "task=evaluate needs ckpt_path=<checkpoint of a distillation run>, e.g. "
            "ckpt_path=outputs/distill/runs/<date>/checkpoints/last.ckpt, with the same dataset, pair and method"
        )
    if not Path(ckpt_path).is_file():
        raise FileNotFoundError(f"task=evaluate: no checkpoint at {ckpt_path}")
    loggers = _instantiate_loggers(cfg)
    _log_config(loggers, cfg)
    module = _build_module(cfg, teacher, student, num_classes, shape)
    data = _maybe_teacher_outputs(cfg, datamodule, teacher, cfg.method.kind)
    # The callbacks that wrote the checkpoint, so their saved state (regularizer schedules) loads back.
    callbacks = _instantiate_callbacks(cfg, cfg.method.kind, bool(loggers))
    trainer = _instantiate("trainer", cfg.trainer, callbacks=callbacks, logger=loggers or False)
    trainer.test(module, datamodule=data, ckpt_path=ckpt_path, verbose=False)
    metrics = _complete_metrics(cfg, _metrics(trainer), teacher, student, datamodule, trainer)
    if trainer.is_global_zero:
        _summarize(
            cfg,
            loggers,
            teacher,
            student,
            shape,
            metrics,
            output_dir,
            {"teacher": teacher_info, "checkpoint": str(ckpt_path)},
        )
    return metrics


def _teacher_task(cfg: DictConfig, shape: DatasetShape, num_classes: int, output_dir: Path) -> dict[str, float]:
    loggers = _instantiate_loggers(cfg)
    _log_config(loggers, cfg)
    teacher, info = _obtain_teacher(cfg, shape, num_classes, output_dir, allow_training=True, loggers=loggers)
    datamodule = _instantiate("datamodule", cfg.dataset.datamodule)
    module = _instantiate("teacher module", cfg.teacher_training.module, model=teacher, num_classes=num_classes)
    trainer = _instantiate("trainer", cfg.trainer, callbacks=_progress_bars(cfg), logger=loggers or False)
    log.info("Testing the teacher")
    trainer.test(module, datamodule=datamodule, verbose=False)
    metrics = _metrics(trainer)
    metrics["test/teacher_acc"] = metrics.get("test/acc", float("nan"))
    if trainer.is_global_zero:
        _summarize(cfg, loggers, teacher, None, shape, metrics, output_dir, {"teacher": info})
        if info.get("path"):
            log.info(
                "Teacher saved at %s\nUse it with:  advkd-train dataset=%s pair=%s pair.teacher.checkpoint=%s",
                info["path"],
                cfg.dataset.name,
                cfg.pair.name,
                info["path"],
            )
    return metrics


# ---------------------------------------------------------------------------------------------------- the teacher


def _obtain_teacher(
    cfg: DictConfig,
    shape: DatasetShape,
    num_classes: int,
    output_dir: Path,
    *,
    allow_training: bool,
    loggers: list[Logger] | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """The teacher from ``pair.teacher.checkpoint``, else from the cache, else trained now (and cached)."""
    teacher = _build_model(cfg.pair.teacher.model, num_classes, shape.in_chans, "teacher")
    how_to_train = f"advkd-train task=teacher dataset={cfg.dataset.name} pair={cfg.pair.name}"
    given = cfg.pair.teacher.get("checkpoint")
    if given:
        log.info("Loading the teacher from %s", given)
        load_teacher(teacher, given, how_to_train=how_to_train)
        return teacher.eval(), {"source": "checkpoint", "path": str(given)}
    training = cfg.teacher_training
    dm_cfg = _merged(cfg.dataset.datamodule, training.get("datamodule"))
    trainer_cfg = _merged(cfg.trainer, training.get("trainer"))
    recipe = teacher_recipe(
        dataset=dm_cfg,
        model=_plain(cfg.pair.teacher.model),
        module=_plain(training.module),
        trainer=trainer_cfg,
        seed=int(cfg.seed),
        num_classes=num_classes,
        in_chans=shape.in_chans,
    )
    key = recipe_key(recipe)
    path = cached_teacher_path(cfg.paths.cache_dir, cfg.pair.teacher.model.name, key)
    if path.is_file() and not training.get("retrain", False):
        log.info("Using the cached teacher %s", path)
        load_teacher(teacher, path, how_to_train=how_to_train)
        return teacher.eval(), {"source": "cache", "path": str(path), "key": key, **read_teacher_meta(path)}
    if not allow_training:
        raise MissingTeacherError(
            f"no cached teacher for this dataset, architecture, recipe and seed (expected {path}). Train it with the "
            f"same overrides as the run that made the checkpoint:\n  {how_to_train} ...\nor give "
            "pair.teacher.checkpoint=<file>."
        )
    log.info("Training the teacher %s with labels (cached afterwards as %s)", cfg.pair.teacher.model.name, path)
    started = time.perf_counter()
    val_acc = _train_teacher(cfg, teacher, dm_cfg, trainer_cfg, num_classes, output_dir, loggers)
    meta = {"key": key, "recipe": recipe, "val_acc": val_acc, "train_seconds": time.perf_counter() - started}
    log.info("Teacher trained in %.0f s", meta["train_seconds"])
    if training.get("cache", True) and rank_zero_only.rank == 0:
        save_teacher(teacher, path, meta)
        log.info("Teacher cached at %s (val acc %s)", path, f"{val_acc:.4f}" if val_acc is not None else "n/a")
    return teacher.eval(), {"source": "trained", "path": str(path) if training.get("cache", True) else None, **meta}


def _train_teacher(
    cfg: DictConfig,
    teacher: nn.Module,
    dm_cfg: dict[str, Any],
    trainer_cfg: dict[str, Any],
    num_classes: int,
    output_dir: Path,
    loggers: list[Logger] | None,
) -> float | None:
    datamodule = _instantiate("teacher datamodule", OmegaConf.create(dm_cfg))
    module = _instantiate("teacher module", cfg.teacher_training.module, model=teacher, num_classes=num_classes)
    callbacks: list[Callback] = _progress_bars(cfg)
    if loggers:
        callbacks.append(LearningRateMonitor(logging_interval="epoch"))
    teacher_logger: Any = loggers if loggers else False
    trainer_node = OmegaConf.create({**trainer_cfg, "default_root_dir": str(output_dir / "teacher")})
    trainer = _instantiate(
        "teacher trainer", trainer_node, callbacks=callbacks, logger=teacher_logger, enable_checkpointing=False
    )
    trainer.fit(module, datamodule=datamodule)
    _broadcast_from_rank_zero(teacher)
    value = trainer.callback_metrics.get("val/acc")
    return float(value) if value is not None else None


def _broadcast_from_rank_zero(model: nn.Module) -> None:
    """Make every process hold rank 0's teacher (BatchNorm statistics drift apart under DDP after the last step)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        for tensor in [*model.parameters(), *model.buffers()]:
            torch.distributed.broadcast(tensor.data, src=0)


# ---------------------------------------------------------------------------------------------------- builders


def _instantiate(what: str, node: Any, *, detail: str = "", **kwargs: Any) -> Any:
    target = node.get("_target_", "?") if hasattr(node, "get") else "?"
    log.info("Instantiating %s <%s>%s", what, target, f" ({detail})" if detail else "")
    try:
        # Plain lists and dicts, not OmegaConf containers: they end up in checkpoints' hyper-parameters, which
        # torch.load(weights_only=True) must be able to read back (resume, evaluate).
        return instantiate(node, _convert_="all", **kwargs)
    except InstantiationException as err:
        # The object's own message (e.g. "data_term must be one of ...") says what to fix; Hydra's wrapper only
        # repeats it inside a longer one. The log line above names the target.
        if isinstance(err.__cause__, (ValueError, TypeError, KeyError, FileNotFoundError)):
            raise err.__cause__ from None
        raise


def _build_model(node: DictConfig, num_classes: int, in_chans: int, role: str) -> nn.Module:
    return _instantiate(role, node, detail=str(node.get("name")), num_classes=num_classes, in_chans=in_chans)


def _build_module(
    cfg: DictConfig, teacher: nn.Module, student: nn.Module, num_classes: int, shape: DatasetShape
) -> L.LightningModule:
    kind = cfg.method.kind
    if kind == "supervised":
        return _instantiate("module", cfg.method.module, model=student, num_classes=num_classes)
    if cfg.get("channels_last", False):
        # 1.3-1.8x faster convolutions on CPU (MACHINE.md); inputs follow the weights' memory format.
        teacher.to(memory_format=torch.channels_last)
        student.to(memory_format=torch.channels_last)
    input_shape = [shape.in_chans, shape.image_size, shape.image_size]
    kwargs: dict[str, Any] = {
        "teacher": teacher,
        "student": student,
        "num_classes": num_classes,
        "input_shape": input_shape,
    }
    if kind == "adversarial":
        width = _feature_width(teacher, cfg.pair.teacher.get("tap"), input_shape)
        kwargs["discriminator"] = _instantiate("discriminator", cfg.discriminator, in_features=width)
    return _instantiate("module", cfg.method.module, **kwargs)


def _feature_width(model: nn.Module, tap: str | None, input_shape: list[int]) -> int:
    """Width of the feature a tap reads: off an ``nn.Linear`` when possible, else from one forward pass."""
    feature_tap = FeatureTap(model, tap, role="teacher")
    try:
        width = static_feature_width(model, feature_tap.tap)
        if width is None:
            was_training = model.training
            model.eval()
            with torch.no_grad(), feature_tap.capture():
                model(torch.zeros(2, *input_shape))
            model.train(was_training)
            width = int(feature_tap.pop().shape[1])
        return width
    finally:
        feature_tap.remove()


def _maybe_teacher_outputs(cfg: DictConfig, datamodule: Any, teacher: nn.Module, kind: str) -> Any:
    """The datamodule, or its teacher-output-cache wrapper when that is exact and the method can use it."""
    wanted = cfg.get("teacher_output_cache", False) and cfg.method.get("teacher_output_cache", False)
    if not wanted or kind == "supervised":
        return datamodule
    if getattr(datamodule, "augment", False):
        log.info("teacher-output cache off: the training images are augmented (dataset.datamodule.augment=true)")
        return datamodule
    log.info("Teacher-output cache on: the frozen teacher runs once per image instead of at every step")
    module = cfg.method.module
    attention = [str(teacher_layer) for _, teacher_layer in module.get("attention_pairs") or []]
    if not module.get("attention_weight"):
        attention = []
    return TeacherOutputDataModule(
        datamodule,
        teacher,
        teacher_tap=cfg.pair.teacher.get("tap"),
        cache_dir=Path(cfg.paths.cache_dir).expanduser() / "teacher_outputs",
        seed=int(cfg.seed),
        attention_layers=attention,
    )


def _instantiate_callbacks(cfg: DictConfig, kind: str, has_logger: bool) -> list[Callback]:
    callbacks: list[Callback] = []
    for name, node in (cfg.get("callbacks") or {}).items():
        if not isinstance(node, DictConfig) or "_target_" not in node:
            continue
        if node._target_.endswith("LearningRateMonitor") and not has_logger:
            log.info("Skipping callback %s: it needs a logger (logger=none)", name)
            continue
        callbacks.append(_instantiate(f"callback {name}", node))
    regularizers = {name: node for name, node in (cfg.get("regularizer") or {}).items() if node is not None}
    if kind == "adversarial":
        if not regularizers:
            log.info("No discriminator regularizer (regularizer=none): the unregularized baseline")
        for name, node in regularizers.items():
            callbacks.append(_instantiate(f"regularizer {name}", node))
    elif regularizers and kind != "supervised":
        log.info("method %s has no discriminator: regularizers %s are not used", cfg.method.name, list(regularizers))
    return callbacks


def _progress_bars(cfg: DictConfig) -> list[Callback]:
    """Only the progress-bar callbacks of ``cfg.callbacks`` (for the teacher's training and testing)."""
    nodes = [
        node for node in (cfg.get("callbacks") or {}).values() if isinstance(node, DictConfig) and "_target_" in node
    ]
    return [_instantiate("callback", node) for node in nodes if issubclass(get_class(node._target_), ProgressBar)]


def _instantiate_loggers(cfg: DictConfig) -> list[Logger]:
    regularizers = list((cfg.get("regularizer") or {}).keys()) if cfg.method.kind == "adversarial" else []
    identity = run_identity(cfg.dataset.name, cfg.pair.name, cfg.method.name, cfg.task, regularizers, _sweep_name())
    loggers: list[Logger] = []
    for name, node in (cfg.get("logger") or {}).items():
        if not isinstance(node, DictConfig) or "_target_" not in node:
            continue
        kwargs = {}
        if node._target_.endswith("WandbLogger"):
            kwargs = {key: value for key, value in identity.items() if node.get(key) is None}
        loggers.append(_instantiate(f"logger {name}", node, **kwargs))
    return loggers


def _log_config(loggers: list[Logger], cfg: DictConfig) -> None:
    """The resolved config as the run's hyper-parameters (W&B's run config)."""
    resolved = _resolved(cfg)
    for logger in loggers:
        logger.log_hyperparams(resolved)


# ---------------------------------------------------------------------------------------------------- results


def _metrics(trainer: L.Trainer) -> dict[str, float]:
    return {k: float(v) for k, v in trainer.callback_metrics.items() if getattr(v, "numel", lambda: 1)() == 1}


def _complete_metrics(
    cfg: DictConfig,
    metrics: dict[str, float],
    teacher: nn.Module,
    student: nn.Module,
    datamodule: Any,
    trainer: L.Trainer,
) -> dict[str, float]:
    """Give the supervised baseline the teacher-vs-student metrics the distillation modules measure themselves."""
    if cfg.method.kind != "supervised" or "test/acc" not in metrics:
        return metrics
    metrics["test/student_acc"] = metrics["test/acc"]
    if trainer.is_global_zero:
        datamodule.setup("test")
        tested = trainer.num_test_batches[0] if trainer.num_test_batches else None
        limit = int(tested) if tested is not None and tested != float("inf") else None
        pair_metrics = evaluate_pair(teacher, student, datamodule.test_dataloader(), max_batches=limit)
        metrics["test/teacher_acc"] = pair_metrics["test/teacher_acc"]
        metrics["test/agreement"] = pair_metrics["test/agreement"]
    return metrics


def _best_checkpoint(trainer: L.Trainer) -> str | None:
    callback = trainer.checkpoint_callback
    if callback is None:
        return None
    return getattr(callback, "best_model_path", None) or getattr(callback, "last_model_path", None) or None


def _summarize(
    cfg: DictConfig,
    loggers: list[Logger],
    teacher: nn.Module,
    student: nn.Module | None,
    shape: DatasetShape,
    metrics: dict[str, float],
    output_dir: Path,
    extra: dict[str, Any],
) -> None:
    arches = {"teacher": cfg.pair.teacher.model.name, "student": cfg.pair.student.model.name}
    threads = torch.get_num_threads()
    # Batch-1 latency on a fixed number of threads: comparable between machines and runs, and not distorted by other
    # processes competing for the cores (OpenMP threads spin-waiting on a busy CPU inflate it tenfold and more).
    torch.set_num_threads(int(cfg.summary.get("latency_threads") or threads))
    try:
        reports = build_reports(
            teacher,
            student,
            arches,
            metrics,
            (shape.in_chans, shape.image_size, shape.image_size),
            latency_repeats=int(cfg.summary.latency_repeats),
        )
    finally:
        torch.set_num_threads(threads)
    if student is None:
        title = f"teacher {arches['teacher']} on {cfg.dataset.name}"
    else:
        title = f"{cfg.method.name} on {cfg.dataset.name}: {arches['teacher']} -> {arches['student']}"
    latency_threads = int(cfg.summary.get("latency_threads") or threads)
    footer = f"CPU latency: batch 1, {latency_threads} thread(s), median of {cfg.summary.latency_repeats} passes"
    table = format_table(reports, title, footer)
    info = {"task": cfg.task, "method": cfg.method.name, "dataset": cfg.dataset.name, "pair": cfg.pair.name, **extra}
    markdown, _ = write_summary(output_dir, reports, metrics, info, title, footer)
    print("\n" + table + f"\n(saved in {markdown})\n", flush=True)
    ratio = compression_ratio(reports)
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            logger.log_table(key="summary/table", columns=list(TABLE_COLUMNS), data=table_rows(reports))
            if ratio is not None:
                logger.experiment.summary["summary/compression_ratio"] = ratio
            for report in reports:
                prefix = f"summary/{report.role}"
                logger.experiment.summary.update(
                    {
                        f"{prefix}_params": report.profile.parameters,
                        f"{prefix}_macs": report.profile.macs,
                        f"{prefix}_size_bytes": report.profile.size_bytes,
                        f"{prefix}_latency_ms": report.profile.latency_ms,
                    }
                )


def _log_student_artifact(cfg: DictConfig, loggers: list[Logger], path: Path, metrics: dict[str, float]) -> None:
    """With ``logger.wandb.log_model``: the trained student's ``state_dict`` as a W&B model artifact (the
    Lightning checkpoints go up too, through ``WandbLogger`` itself)."""
    for logger in loggers:
        if isinstance(logger, WandbLogger) and cfg.logger.wandb.get("log_model"):
            import wandb

            metadata = {
                "arch": cfg.pair.student.model.name,
                "pair": cfg.pair.name,
                "method": cfg.method.name,
                "dataset": cfg.dataset.name,
                "test/student_acc": metrics.get("test/student_acc"),
            }
            artifact = wandb.Artifact(f"student-{logger.experiment.id}", type="model", metadata=metadata)
            artifact.add_file(str(path), name="student.pt")
            logger.experiment.log_artifact(artifact, aliases=["latest"])


# ---------------------------------------------------------------------------------------------------- helpers


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


def _merged(base: DictConfig, overrides: DictConfig | None) -> dict[str, Any]:
    """``base`` resolved in its own config, then ``overrides`` on top (a detached merge would lose interpolations)."""
    merged = OmegaConf.merge(OmegaConf.create(_plain(base)), OmegaConf.create(_plain(overrides) or {}))
    return OmegaConf.to_container(merged, resolve=True)  # type: ignore[return-value]


def _resolved(cfg: DictConfig) -> dict[str, Any]:
    """The job's config, resolved, without Hydra's own node (present when composed with ``return_hydra_config``)."""
    return {key: _plain(cfg[key]) for key in cfg if key != "hydra"}


def _save_resolved_config(cfg: DictConfig, output_dir: Path) -> None:
    if rank_zero_only.rank != 0:
        return
    output_dir.mkdir(parents=True, exist_ok=True)
    text = OmegaConf.to_yaml(OmegaConf.create(_resolved(cfg)))
    (output_dir / "config_resolved.yaml").write_text(text)
    if cfg.get("print_config", False):
        log.info("Resolved config (also in %s):\n%s", output_dir / "config_resolved.yaml", text)


def _pair_input_sizes() -> dict[str, Any]:
    sizes = {}
    for path in sorted((CONF_DIR / "pair").glob("*.yaml")):
        sizes[path.stem] = OmegaConf.load(path).get("input_size")
    return sizes


def _sweep_name() -> str | None:
    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        return Path(HydraConfig.get().sweep.dir).name
    return None


def _check_launch(cfg: DictConfig) -> None:
    """Refuse the combination that hangs: a Hydra multirun with Lightning's subprocess DDP on one machine."""
    if _sweep_name() is None or "SLURM_NTASKS" in os.environ:
        return
    trainer = cfg.trainer
    strategy = str(trainer.get("strategy", "auto"))
    devices = trainer.get("devices", 1)
    several = (isinstance(devices, int) and (devices > 1 or devices == -1)) or (
        isinstance(devices, (list, ListConfig)) and len(devices) > 1
    )
    subprocess_ddp = strategy.startswith("ddp") and not strategy.startswith(("ddp_spawn", "ddp_fork", "ddp_notebook"))
    if several and subprocess_ddp:
        raise IncompatibleConfigError(
            f"--multirun with strategy={strategy} on {devices} devices: Lightning starts the other ranks by re-running "
            "the command line, which re-runs the whole sweep in each of them (MACHINE.md). Run the jobs one by one, "
            "or launch the sweep with hydra/launcher=slurm (one allocation per job, where ddp works)."
        )


if __name__ == "__main__":
    main()
