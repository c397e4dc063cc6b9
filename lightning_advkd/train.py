"""The Hydra entry point: ``advkd-train`` or ``python -m lightning_advkd.train``, configs in ``lightning_advkd/conf``.

With no arguments it runs the main job: Adversarial Network Compression on the offline Fashion-MNIST, on the CPU. The
teacher is trained once with labels and cached (``<paths.cache_dir>/teachers/``), the student learns from it without
labels, and a summary table compares the two. Everything is built from the config's ``_target_`` nodes; every method
is one ``method.module`` node, instantiated with the teacher, the student, the number of classes and the input shape.

Tasks (``task=``):
    distill: (default) get the teacher (``pair.teacher.checkpoint``, the cache, or trained now and cached), train the
        student with ``method=``, test both, print and save the summary. ``ckpt_path=`` resumes a distillation run.
    teacher: train (or find in the cache) the teacher only, test it, print where it is saved.
    evaluate: test the distillation checkpoint ``ckpt_path=`` against its teacher, with the summary.
    export: write the student of ``ckpt_path=`` as safetensors, a state_dict and ONNX (checked against onnxruntime).
    dashboard: build the project's W&B workspace (``dashboard`` options); offline, print what it would save.

Examples:
    advkd-train                                          # the main job
    advkd-train method=kd trainer.max_epochs=20          # another method
    advkd-train regularizer=[adversarial_samples,r1]     # several discriminator regularizers
    advkd-train experiment=cifar100_resnet56_resnet20   # a row of the CIFAR-100 table
    advkd-train -m pair=resnet14_lenet5,nin_lenet5       # a grid, one run directory and W&B run per job
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import hydra
import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig

from lightning_advkd.app.callback_list import instantiate_callbacks
from lightning_advkd.app.checkpoints import PREEMPTED_EXIT_CODE
from lightning_advkd.app.compat import DatasetShape, check_compatibility
from lightning_advkd.app.config import CONF_DIR, SEARCH_PATH, build, pair_input_sizes, plain, save_resolved_config
from lightning_advkd.app.data import with_teacher_outputs
from lightning_advkd.app.export_task import export_task
from lightning_advkd.app.launch import check_launch
from lightning_advkd.app.loggers import instantiate_loggers, log_config, log_student_artifact
from lightning_advkd.app.results import best_checkpoint, save_student, summarize, trainer_metrics
from lightning_advkd.app.teacher_source import build_network, obtain_teacher, teacher_task
from lightning_advkd.app.validate import check_checkpoint, validate
from lightning_advkd.app.wandb_setup import finish_wandb, register_resolvers
from lightning_advkd.dashboard import dashboard_task

log = logging.getLogger("lightning_advkd.train")

TASKS = ("distill", "teacher", "evaluate", "export", "dashboard")

register_resolvers()


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Run one job of the config and return its ``optimized_metric`` (for sweepers such as Optuna)."""
    return optimized_value(cfg, run(cfg))


def run(cfg: DictConfig) -> dict[str, float]:
    """Run the job the composed ``cfg`` describes (:func:`train`), and always finish its W&B run.

    The W&B run (if any) is finished whatever happens, with a failing exit code when the job raises, so every job of a
    sweep gets its own complete run. A job stopped by SIGTERM (a scheduler's preemption) exits with status 143, never 0,
    after ``last.ckpt`` was saved (:class:`~lightning_advkd.app.checkpoints.PreemptionCheckpoint`).

    Returns:
        The final metrics (``test/...`` and the last ``val/...``) as floats.
    """
    register_resolvers()
    start = time.perf_counter()
    exit_code = 1
    try:
        metrics = train(cfg)
        exit_code = 0
        return metrics
    except SIGTERMException as err:  # Lightning's SystemExit, status 0 unless a callback set one
        exit_code = PREEMPTED_EXIT_CODE
        raise SystemExit(PREEMPTED_EXIT_CODE) from err
    finally:
        sync_hint = finish_wandb(exit_code)
        if sync_hint and rank_zero_only.rank == 0:  # type: ignore[attr-defined]  # set on the function at import
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


def train(cfg: DictConfig) -> dict[str, float]:
    """Get the teacher, build the method's module from ``method.module``, fit (or test) it, and summarize the run."""
    task = cfg.task
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    output_dir = Path(cfg.paths.output_dir)
    check_checkpoint(cfg)  # before this run's config_resolved.yaml could replace the resumed run's
    save_resolved_config(cfg, output_dir)
    if task == "dashboard":
        return dashboard_task(cfg)
    L.seed_everything(cfg.seed, workers=True)
    check_launch(cfg)

    datamodule = build("datamodule", cfg.dataset.datamodule)
    shape = DatasetShape.of(cfg.dataset.name, datamodule)
    check_compatibility(plain(cfg.pair), shape, plain(cfg.method), task, other_pairs=pair_input_sizes())
    classes = cfg.pair.get("num_classes") or shape.num_classes
    assert classes is not None  # check_compatibility raised when neither the pair nor the dataset has a class count
    num_classes = int(classes)
    validate(cfg, shape, num_classes)  # every option the run uses, in seconds, before any training
    if task == "teacher":
        return teacher_task(cfg, shape, num_classes, output_dir)
    if task == "export":
        return export_task(cfg, shape, num_classes, output_dir)
    student = build_network(cfg, "student", num_classes, shape)  # first: the same weights whatever the teacher's source
    teacher, teacher_info = obtain_teacher(cfg, shape, num_classes, output_dir, allow_training=task == "distill")
    ckpt_path = _checkpoint_to_test(cfg) if task == "evaluate" else cfg.get("ckpt_path")
    if cfg.get("channels_last", False):  # 1.3-1.8x faster CPU convolutions; inputs follow the weights' format
        teacher.to(memory_format=torch.channels_last)
        student.to(memory_format=torch.channels_last)
    # Seeded again: the student's training draws the same random numbers whether the teacher was just trained in
    # this process or loaded from the cache, so a rerun with a cached teacher reproduces the first run.
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    loggers = instantiate_loggers(cfg)
    loggers = log_config(loggers, cfg)  # starts the W&B run: the config is recorded even if building fails below
    callbacks = instantiate_callbacks(cfg, has_logger=bool(loggers))
    input_shape = [shape.in_chans, shape.image_size, shape.image_size]
    module = build(
        "module", cfg.method.module, teacher=teacher, student=student, num_classes=num_classes, input_shape=input_shape
    )
    data = with_teacher_outputs(cfg, datamodule, module)
    trainer = build("trainer", cfg.trainer, callbacks=callbacks, logger=loggers or False)
    metrics: dict[str, float] = {}
    if task == "distill":
        log.info("Training the student (%s, method %s)", cfg.pair.student.model.name, cfg.method.name)
        trainer.fit(module, datamodule=data, ckpt_path=ckpt_path)
        metrics = trainer_metrics(trainer)
    if task == "evaluate" or cfg.get("test_after_fit", True):
        log.info("Testing teacher and student")
        trainer.test(module, datamodule=data, ckpt_path=ckpt_path if task == "evaluate" else None, verbose=False)
        metrics.update(trainer_metrics(trainer))
    extra = {"teacher": teacher_info, "checkpoint": best_checkpoint(trainer) if task == "distill" else str(ckpt_path)}
    if trainer.is_global_zero:
        if task == "distill":
            student_path = save_student(module, student, output_dir / "student.pt")
            log_student_artifact(cfg, loggers, student_path, metrics)
            extra["student_state_dict"] = str(student_path)
        summarize(cfg, loggers, teacher, student, shape, metrics, output_dir, extra)
    return metrics


def _checkpoint_to_test(cfg: DictConfig) -> str:
    ckpt_path = cfg.get("ckpt_path")
    if not ckpt_path:
        raise ValueError(
            "task=evaluate needs ckpt_path=<checkpoint of a distillation run>, e.g. "
            "ckpt_path=outputs/distill/runs/<date>/checkpoints/last.ckpt, with the same dataset, pair and method"
        )
    if not Path(ckpt_path).is_file():
        raise FileNotFoundError(f"task=evaluate: no checkpoint at {ckpt_path}")
    return str(ckpt_path)


__all__ = ["CONF_DIR", "SEARCH_PATH", "TASKS", "main", "optimized_value", "run", "train"]

if __name__ == "__main__":
    main()
