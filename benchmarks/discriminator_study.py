"""Does the discriminator help? A paired, validation-selected study of adversarial distillation (protocol v2).

Protocol:
  * a validation split is carved from the training set (``--val-size`` images, fixed split seed); every choice of
    recipe, weight and epoch count is made on validation accuracy; the test set is read **once per run**, after the
    last epoch;
  * each teacher is trained once with labels on the remaining training images (never on validation or test) and
    cached; the students of every method train under the same budget (epochs, batch, optimizer, schedule, data);
  * every adversarial row has a *discriminator-off twin*: the same recipe with ``adversarial_weight=0`` and the same
    seeds, named ``<row>_twin``. With the adversarial weight at 0 nothing of the discriminator reaches the student
    (its input, loss, regularizers and optimizer only shape the discriminator), so rows that differ only on the
    discriminator's side share one twin, run once (``twin_of`` lists the rows it serves; a test checks the claim);
  * the discriminator's contribution is the paired difference row - twin over seeds: mean, 95 % t-interval and
    the number of seeds it wins.

Training images are not augmented (every method alike) so that the label-free methods read the teacher's outputs
from the teacher-output cache; runs are single-threaded and ``--jobs`` of them run side by side.

Each finished run is one JSON line of ``benchmarks/results/<study>/runs.jsonl``; rerunning skips the runs already
there, so an interrupted study resumes. ``table.md``, ``table.csv`` and ``accuracy.png`` (paired differences) and
``health.png`` (discriminator accuracy and feature scale over training) are rewritten from ``runs.jsonl``.

Pairs and regimes: ``--pairs`` picks teacher-student pairs; ``--train-size`` and ``--epochs`` set the regime (e.g. a
long schedule on a small subset, where matching the teacher's distribution should matter more). Rows are compared
within one setting (pair, training images, epochs); the table has one block per setting.

Usage:
  python benchmarks/discriminator_study.py --pairs resnet14-lenet5 --rows headline --jobs 2   # headline, 10 seeds
  python benchmarks/discriminator_study.py --pairs resnet14-lenet5 --rows variants --seeds 0 1 2 3 4 --jobs 2
  python benchmarks/discriminator_study.py --pairs resnet14-lenet5 --train-size 5000 --epochs 60 --seeds 0 1 2 3 4
  python benchmarks/discriminator_study.py --table-only                      # re-table runs.jsonl
  python benchmarks/discriminator_study.py --quick                           # a smoke run: minutes
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import fcntl
import functools
import hashlib
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_advkd import (
    AdversarialDistillation,
    AdversarialSamples,
    AugmentedViewCache,
    AugmentedViews,
    MLPDiscriminator,
    R1Penalty,
    TeacherOutputCache,
    view_loader,
)
from lightning_advkd.data import FashionMNISTDataModule
from lightning_advkd.distillation import KnowledgeDistillation
from lightning_advkd.models import create_model, load_weights
from lightning_advkd.supervised import SupervisedClassifier
from lightning_advkd.view_cache import cache_folder_name

HERE = Path(__file__).parent
NUM_CLASSES = 10
REGULARIZERS = {"r1": R1Penalty, "adversarial_samples": AdversarialSamples}
# Module options that only shape the discriminator's game: with adversarial_weight=0 they cannot reach the student
# (the adapter feeds only the discriminator while the feature hint is off, as in every row here).
DISCRIMINATOR_SIDE = {
    "adversarial_weight", "adversarial_dropout", "perturb_adversarial_term", "discriminator_input",
    "conditional_discriminator", "gan_loss", "spectral_norm", "discriminator_lr", "discriminator_steps",
    "adapter_activation",
}  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Pair:
    """A teacher-student pair: architectures and the teacher's training budget."""

    teacher: str
    student: str
    teacher_epochs: int = 15
    #: (student layer, teacher layer) pairs of the discriminator on several layers (rows with discriminator_layers)
    layers: tuple[tuple[str, str], ...] = ()


@dataclasses.dataclass(frozen=True)
class Row:
    """One method: ``kind`` is ``supervised``, ``kd`` (KnowledgeDistillation) or ``anc`` (AdversarialDistillation)."""

    kind: str
    options: tuple[tuple[str, Any], ...] = ()
    regularizers: tuple[tuple[str, float], ...] = ()

    @property
    def adversarial(self) -> bool:
        return self.kind == "anc" and dict(self.options).get("adversarial_weight", 0.1) > 0

    def twin(self) -> Row:
        """The discriminator-off twin: adversarial weight 0, no regularizer, discriminator-only options dropped."""
        options = {k: v for k, v in self.options if k not in DISCRIMINATOR_SIDE}
        return Row("anc", tuple(sorted({**options, "adversarial_weight": 0.0}.items())))

    def key(self) -> str:
        text = json.dumps([self.kind, list(self.options), list(self.regularizers)])
        return hashlib.sha256(text.encode()).hexdigest()[:10]


def anc(regularizers: tuple[tuple[str, float], ...] = (("r1", 1.0),), **options: Any) -> Row:
    """An ANC row: the package defaults (KL data term, adversarial weight 0.1, R1) changed by ``options``."""
    return Row("anc", tuple(sorted(options.items())), regularizers)


PAIRS = {
    # a plain CNN student without BatchNorm; its two conv layers against the teacher's first two stages
    "resnet14-lenet5": Pair("resnet14", "lenet5", layers=(("conv1", "layer1"), ("conv2", "layer2"))),
    # BatchNorm students: a residual one close to the teacher in design, and one of another family (both train an
    # order of magnitude slower than LeNet-5 on a CPU: run them on a subset, --train-size)
    "resnet14-resnet8": Pair("resnet14", "resnet8", layers=(("layer1", "layer1"), ("layer2", "layer2"))),
    "resnet14-mobilenetv2": Pair("resnet14", "mobilenetv2_x0_5"),
}
ROWS: dict[str, Row] = {
    "supervised": Row("supervised"),
    "kd": Row("kd"),
    "anc_default": anc(),
    # the paper's recipe, unchanged: L2 on logits, adversarial weight 1, adversarial samples
    "anc_paper": anc((("adversarial_samples", 1.0),), adversarial_weight=1.0, data_term="l2"),
    "anc_wadv1": anc(adversarial_weight=1.0),
    "anc_dlr_low": anc(discriminator_lr=2e-5),
    "anc_conditional": anc(conditional_discriminator=True),
    "anc_logits": anc(discriminator_input="logits"),
    "anc_hinge_sn": anc((), gan_loss="hinge", spectral_norm=True),
    "anc_relativistic": anc(gan_loss="relativistic"),
    # the diagnosis' fix: adapted student features in the teacher's non-negative range
    "anc_relu_adapter": anc(adapter_activation="relu"),
    "anc_relu_wadv1": anc(adapter_activation="relu", adversarial_weight=1.0),
    # a discriminator on several layers: the attention maps of the pair's layers next to the pooled feature. Its
    # adversarial samples (dropout on each layer's map) draw from the student's random stream: its twin is its own
    "anc_layers": anc(discriminator_layers=True),
}
ROW_SETS = {
    "headline": ["supervised", "kd", "anc_default"],
    "variants": ["anc_relu_adapter", "anc_relu_wadv1", "anc_conditional", "anc_paper", "anc_hinge_sn", "anc_logits"],
    "more_variants": ["anc_wadv1", "anc_dlr_low", "anc_relativistic", "anc_layers"],
}  # fmt: skip


# ---------------------------------------------------------------------- data and teachers


def datasets(args: argparse.Namespace) -> dict[str, TensorDataset]:
    """Un-augmented, normalised train / validation / test tensors; the split depends only on ``--split-seed``."""
    data = FashionMNISTDataModule(batch_size=1000, augment=False, val_split=args.val_size, seed=args.split_seed)
    data.setup("fit")
    data.setup("test")
    train = _tensors(data.train_dataloader(), shuffle_free=True)
    if args.train_size:
        train = TensorDataset(*(t[: args.train_size] for t in train.tensors))
    return {"train": train, "val": _tensors(data.val_dataloader()), "test": _tensors(data.test_dataloader())}


def augmented_views(args: argparse.Namespace) -> AugmentedViews:
    """The training images (the same ones as :func:`datasets`) as ``--epochs`` views of random crop (padding 2) and
    flip, one fresh view per epoch; the views are fixed by the split seed, so every method and seed sees the same."""
    data = FashionMNISTDataModule(
        batch_size=128, augment=True, val_split=args.val_size, seed=args.split_seed, num_views=args.epochs
    )
    data.setup("fit")
    views = data.train_views
    assert isinstance(views, AugmentedViews)
    if args.train_size:
        labels = None if views.labels is None else views.labels[: args.train_size]
        views = AugmentedViews(
            views.images[: args.train_size], labels, views.transform, num_views=views.num_views, seed=views.seed
        )
    return views


def _tensors(loader: DataLoader, shuffle_free: bool = False) -> TensorDataset:
    if shuffle_free:  # the datamodule's train loader shuffles: read the subset in its own order instead
        loader = DataLoader(loader.dataset, batch_size=1000, shuffle=False)
    images, labels = zip(*[(x, y) for x, y in loader], strict=True)
    return TensorDataset(torch.cat(images), torch.cat(labels))


def teacher_path(pair: Pair, args: argparse.Namespace) -> Path:
    recipe = {"arch": pair.teacher, "epochs": teacher_epochs(pair, args), "lr": 0.1, "batch": 128, "augment": True,
              "val_size": args.val_size, "split_seed": args.split_seed}  # fmt: skip
    key = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]
    return args.cache_dir / f"fmnist-teacher-{pair.teacher}-{key}.pt"


def teacher_epochs(pair: Pair, args: argparse.Namespace) -> int:
    return args.teacher_epochs or pair.teacher_epochs


def train_teacher(pair: Pair, args: argparse.Namespace) -> nn.Module:
    """Train the teacher with labels on the training split (augmented), once; later calls load it."""
    teacher = create_model(pair.teacher, num_classes=NUM_CLASSES, in_chans=1)
    path = teacher_path(pair, args)
    if path.is_file():
        load_weights(teacher, path)
        return teacher.eval()
    L.seed_everything(0, verbose=False)
    data = FashionMNISTDataModule(batch_size=128, augment=True, val_split=args.val_size, seed=args.split_seed)
    module = SupervisedClassifier(teacher, NUM_CLASSES, lr=0.1, milestones=(0.5, 0.75), channels_last=True)
    start = time.time()
    trainer = L.Trainer(
        accelerator="cpu", devices=1, max_epochs=teacher_epochs(pair, args), logger=False, enable_checkpointing=False,
        enable_model_summary=False, enable_progress_bar=False, num_sanity_val_steps=0, limit_val_batches=0,
        default_root_dir=args.cache_dir,
    )  # fmt: skip
    trainer.fit(module, data)
    print(f"teacher {pair.teacher}: {teacher_epochs(pair, args)} epochs in {time.time() - start:.0f} s", flush=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".tmp")
    torch.save(teacher.state_dict(), partial)
    partial.replace(path)
    return teacher.eval()


def accuracy(model: nn.Module, data: TensorDataset) -> float:
    with torch.no_grad():
        predictions = torch.cat([model(x).argmax(1) for x, _ in DataLoader(data, batch_size=1000)])
    return float((predictions == data.tensors[1]).float().mean())


# ---------------------------------------------------------------------- one run


class History(Callback):
    """Per-epoch validation accuracy and discriminator health (accuracy on real / fake, feature scale)."""

    def __init__(self, probe: dict[str, torch.Tensor] | None) -> None:
        self.probe = probe  # one cached validation batch for the feature-scale statistics
        self.epochs: list[dict[str, float]] = []

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        record = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(("val/", "train/d_"))}
        if self.probe is not None and isinstance(pl_module, AdversarialDistillation):
            teacher_features, student_features = pl_module.features(self.probe)
            record["teacher_feature_norm"] = float(teacher_features.norm(dim=1).mean())
            record["student_feature_norm"] = float(student_features.norm(dim=1).mean())
            record["feature_mean_gap"] = float((teacher_features.mean(0) - student_features.mean(0)).norm())
        self.epochs.append(record)


def sgd(params: Any, lr: float) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=5e-4)


def cosine(optimizer: torch.optim.Optimizer, epochs: int) -> torch.optim.lr_scheduler.LRScheduler:
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)


def critic_teacher_layers(pair: Pair, row: Row) -> tuple[str, ...]:
    """The teacher layers whose attention maps a row's discriminator judges (the caches must hold them)."""
    return tuple(teacher for _, teacher in pair.layers) if dict(row.options).get("discriminator_layers") else ()


def build_module(
    row: Row, pair: Pair, teacher: nn.Module, student: nn.Module, args: argparse.Namespace
) -> L.LightningModule:
    optimizer = functools.partial(sgd, lr=args.lr)
    scheduler = functools.partial(cosine, epochs=args.epochs)
    if row.kind == "supervised":
        return SupervisedClassifier(student, NUM_CLASSES, optimizer=optimizer, scheduler=scheduler)
    if row.kind == "kd":
        return KnowledgeDistillation(teacher, student, kd_weight=1.0, optimizer=optimizer, scheduler=scheduler)
    options = dict(row.options)
    discriminator_lr = options.pop("discriminator_lr", None)
    if options.pop("discriminator_layers", False):
        if not pair.layers:
            raise SystemExit(
                f"pair {pair.teacher}-{pair.student} names no layers for a discriminator on several layers"
            )
        options.update(discriminator_layers=pair.layers, input_shape=(1, 28, 28))
    if options.pop("spectral_norm", False):
        options["discriminator"] = functools.partial(MLPDiscriminator, spectral_norm=True)
    if discriminator_lr is not None:
        options["discriminator_optimizer"] = functools.partial(
            torch.optim.Adam, lr=discriminator_lr, betas=(0.5, 0.999)
        )
    return AdversarialDistillation(
        teacher, student, student_optimizer=optimizer, student_scheduler=scheduler, student_grad_clip=args.clip,
        **options,
    )  # fmt: skip


def run_one(pair_name: str, method: str, row: Row, seed: int, data: dict, args: argparse.Namespace) -> dict:
    pair = PAIRS[pair_name]
    teacher = train_teacher(pair, args)
    L.seed_everything(seed, verbose=False)
    student = create_model(pair.student, num_classes=NUM_CLASSES, in_chans=1)
    module = build_module(row, pair, teacher, student, args)
    cached = row.kind != "supervised"
    train, val, test = (data[f"{split}_cached" if cached else split] for split in ("train", "val", "test"))
    probe = next(iter(DataLoader(val, batch_size=1000))) if row.kind == "anc" else None
    history = History(probe)
    callbacks = [history, *(REGULARIZERS[name](weight=weight) for name, weight in row.regularizers)]
    trainer = L.Trainer(
        accelerator="cpu", devices=1, max_epochs=args.epochs, logger=False, enable_checkpointing=False,
        enable_model_summary=False, enable_progress_bar=False, num_sanity_val_steps=0, callbacks=callbacks,
        gradient_clip_val=None if row.kind == "anc" else args.clip, log_every_n_steps=50,
        default_root_dir=args.out / "lightning",
    )  # fmt: skip
    start = time.time()
    generator = torch.Generator().manual_seed(seed)
    if args.augment:  # epoch e reads view e; the label-free methods read the teacher's outputs for that very view
        loader = data["views_cached" if cached else "views"].dataloader(batch_size=128, generator=generator)
    else:
        loader = DataLoader(train, batch_size=128, shuffle=True, generator=generator)
    trainer.fit(module, loader, DataLoader(val, batch_size=1000))
    seconds = time.time() - start
    (tested,) = trainer.test(module, DataLoader(test, batch_size=1000), verbose=False)
    metric = "acc" if row.kind == "supervised" else "student_acc"
    last = history.epochs[-1]
    return {
        "pair": pair_name, "method": method, "seed": seed, "epochs": args.epochs, "train_size": len(train),
        "val_size": len(val), "augment": args.augment, "adversarial": row.adversarial, "row_key": row.key(),
        "val_acc": last[f"val/{metric}"], "test_acc": tested[f"test/{metric}"],
        "d_acc": _d_acc(last), "d_acc_real": last.get("val/d_acc_real"), "d_acc_fake": last.get("val/d_acc_fake"),
        "teacher": pair.teacher, "student": pair.student, "lr": args.lr, "clip": args.clip,
        "recipe": {"kind": row.kind, "options": dict(row.options), "regularizers": dict(row.regularizers)},
        "seconds": seconds, "history": history.epochs,
    }  # fmt: skip


def _d_acc(record: dict[str, float]) -> float | None:
    if "val/d_acc_real" not in record:
        return None
    return (record["val/d_acc_real"] + record["val/d_acc_fake"]) / 2


# ---------------------------------------------------------------------- the plan and its execution


def plan(args: argparse.Namespace) -> list[tuple[str, str, Row, int, list[str]]]:
    """Every (pair, method, row, seed, twin_of) the arguments ask for, twins included and shared where identical."""
    runs: dict[tuple[str, str, int], tuple[str, str, Row, int, list[str]]] = {}
    for pair in args.pairs:
        for name in args.rows:
            row = ROWS[name]
            for seed in args.seeds:
                runs.setdefault((pair, row.key(), seed), (pair, name, row, seed, []))
                if row.kind == "anc" and row.adversarial:
                    twin = row.twin()
                    entry = runs.setdefault((pair, twin.key(), seed), (pair, f"{name}_twin", twin, seed, []))
                    entry[4].append(name)
    return list(runs.values())


def code_version() -> str:
    """The git commit of the code this process runs (``unknown`` outside a git checkout)."""
    try:
        command = ["git", "-C", str(HERE), "rev-parse", "--short", "HEAD"]
        return subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def load_runs(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line] if path.exists() else []


def append_run(path: Path, result: dict) -> None:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        handle.write(json.dumps(result) + "\n")


def build_caches(teacher: nn.Module, data: dict, args: argparse.Namespace, layers: tuple[str, ...] = ()) -> dict:
    """The teacher's outputs for every split, and with ``--augment`` for every view of the training images.

    ``layers``: teacher layers whose attention maps are cached too (a separate cache; the outputs are the same).
    """
    cached = {f"{split}_cached": TeacherOutputCache(data[split], teacher, cache_dir=args.cache_dir / "outputs",
                                                    batch_size=1000, attention_layers=layers)
              for split in ("train", "val", "test")}  # fmt: skip
    if args.augment:
        views = augmented_views(args)
        path = args.cache_dir / "views" / cache_folder_name(teacher, views, attention_layers=layers)
        start = time.time()
        cached["views_cached"] = AugmentedViewCache(views, teacher, path=path, batch_size=1000, attention_layers=layers)
        cached["views"] = _ViewLoader(views)
        print(f"view cache {path.name}: ready in {time.time() - start:.0f} s", flush=True)
    return {**data, **cached}


@dataclasses.dataclass
class _ViewLoader:
    """The augmented views themselves, for the supervised row (it needs no teacher output)."""

    views: AugmentedViews

    def dataloader(self, batch_size: int, generator: torch.Generator) -> DataLoader:
        return view_loader(self.views, batch_size, generator=generator)


def work(args: argparse.Namespace, worker: int, workers: int) -> None:
    """Run this worker's share of the pending runs, appending each result as it finishes."""
    torch.set_num_threads(args.threads)
    data = datasets(args)
    runs_file = args.out / "runs.jsonl"
    done = {
        (r["pair"], r["row_key"], r["seed"])
        for r in load_runs(runs_file)
        if r["epochs"] == args.epochs and r["train_size"] == len(data["train"]) and r["augment"] == args.augment
    }
    pending = [p for p in plan(args) if (p[0], p[2].key(), p[3]) not in done]
    pending.sort(key=lambda p: (args.pairs.index(p[0]), p[3]))  # seed by seed: every row gets seeds evenly
    caches: dict[tuple[str, tuple[str, ...]], dict] = {}
    for pair, method, row, seed, twin_of in pending[worker::workers]:
        key = (pair, critic_teacher_layers(PAIRS[pair], row))
        if key not in caches:
            caches[key] = build_caches(train_teacher(PAIRS[pair], args), data, args, key[1])
        result = run_one(pair, method, row, seed, caches[key], args)
        result["twin_of"] = twin_of
        result["command"] = " ".join(["python", "benchmarks/discriminator_study.py", *args.argv])
        result["code"] = code_version()
        append_run(runs_file, result)
        print(f"[{worker}] {pair} {method:>22} seed {seed}: val {100 * result['val_acc']:.2f} test "
              f"{100 * result['test_acc']:.2f} ({result['seconds']:.0f} s)", flush=True)  # fmt: skip


def launch(args: argparse.Namespace, argv: list[str]) -> None:
    """Train the teachers and build the output caches once, then run ``--jobs`` single-threaded workers."""
    torch.set_num_threads(max(args.threads, args.jobs))
    data = datasets(args)
    for pair in args.pairs:
        teacher = train_teacher(PAIRS[pair], args)
        for layers in {critic_teacher_layers(PAIRS[pair], ROWS[name]) for name in args.rows}:
            build_caches(teacher, data, args, layers)
        print(f"teacher {PAIRS[pair].teacher}: val {100 * accuracy(teacher, data['val']):.2f} %", flush=True)
    if args.teachers_only:
        return
    if args.jobs == 1:
        work(args, 0, 1)
        return
    workers = [
        subprocess.Popen([sys.executable, __file__, *argv, "--worker", f"{i}/{args.jobs}"]) for i in range(args.jobs)
    ]
    codes = [w.wait() for w in workers]
    if any(codes):
        raise SystemExit(f"a worker failed: exit codes {codes}")


# ---------------------------------------------------------------------- tables and plots


def mean_ci(values: list[float]) -> tuple[float, float, float]:
    """Mean and 95 % t-interval half-width of ``values`` (half-width nan for fewer than 2 values)."""
    mean = statistics.mean(values)
    if len(values) < 2:
        return mean, math.nan, statistics.pstdev(values)
    from scipy import stats

    std = statistics.stdev(values)
    return mean, float(stats.t.ppf(0.975, len(values) - 1)) * std / math.sqrt(len(values)), std


Setting = tuple[str, int, int, bool]


def setting(run: dict) -> Setting:
    """Where a run belongs: its pair and regime (training images, epochs, augmentation); rows are compared within
    one setting."""
    return run["pair"], run["train_size"], run["epochs"], run["augment"]


def setting_label(where: Setting) -> str:
    pair, train_size, epochs, augment = where
    return f"{pair}, {train_size:,} images x {epochs} epochs" + (", augmented" if augment else "")


def paired_differences(runs: list[dict], where: Setting, method: str, other: str, key: str = "test_acc") -> list[float]:
    """``method - other`` in points, one per seed both ran in one setting."""
    a = {r["seed"]: r[key] for r in runs if setting(r) == where and r["method"] == method}
    b = {r["seed"]: r[key] for r in runs if setting(r) == where and r["method"] == other}
    return [100 * (a[s] - b[s]) for s in sorted(set(a) & set(b))]


def paired(runs: list[dict], where: Setting, method: str, other: str, key: str = "test_acc") -> dict | None:
    """Paired difference ``method - other`` over the seeds both have in one setting, in points."""
    return describe(paired_differences(runs, where, method, other, key))


def describe(diffs: list[float]) -> dict | None:
    """Mean, 95 % t-interval and wins of paired differences (``None`` when there are none)."""
    if not diffs:
        return None
    mean, half, _ = mean_ci(diffs)
    return {"n": len(diffs), "mean": mean, "low": mean - half, "high": mean + half,
            "wins": sum(d > 0 for d in diffs)}  # fmt: skip


def row_order(method: str) -> int:
    """Where a method's row comes in the tables: the order of ``ROWS`` (unknown names last)."""
    return next((i for i, name in enumerate(ROWS) if name == method), len(ROWS))


def pooled_over_settings(runs: list[dict]) -> list[dict]:
    """Each adversarial method against its twin, every paired seed of every setting it ran in pooled."""
    methods = sorted({r["method"] for r in runs if r.get("adversarial")}, key=row_order)
    pooled = []
    for method in methods:
        settings, diffs = [], []
        for where in sorted({setting(r) for r in runs if r["method"] == method}):
            twin = twin_name(runs, where, method)
            found = paired_differences(runs, where, method, twin) if twin else []
            if found:
                settings.append(where)
                diffs += found
        if diffs:
            pooled.append({"method": method, "settings": len(settings), "vs_twin": describe(diffs)})
    return pooled


DEFAULT = "anc_default"


def default_selection(runs: list[dict]) -> list[dict]:
    """Every adversarial variant against the package default on validation, paired, per setting both ran in.

    The rule the study applies: a variant replaces the default only if it beats it on validation with the 95 %
    interval of the paired difference above 0 (a mean ahead by noise does not move a package default).
    """
    selection = []
    for where in sorted({setting(r) for r in runs if r["method"] == DEFAULT}):
        variants = {
            r["method"] for r in runs if setting(r) == where and r.get("adversarial") and r["method"] != DEFAULT
        }
        for method in sorted(variants, key=row_order):
            diff = paired(runs, where, method, DEFAULT, "val_acc")
            if diff is not None:
                wins = diff["n"] > 1 and diff["low"] > 0
                selection.append({"setting": where, "method": method, "val_vs_default": diff, "replaces": wins})
    return selection


def twin_name(runs: list[dict], where: Setting, method: str) -> str | None:
    """The method name under which ``method``'s discriminator-off twin ran (shared twins run once)."""
    row = ROWS.get(method)
    if row is None or not row.adversarial:
        return None
    key = row.twin().key()
    return next((r["method"] for r in runs if setting(r) == where and r["row_key"] == key), None)


def summarize(runs: list[dict]) -> list[dict]:
    rows = []
    methods = sorted(
        {(setting(r), r["method"]) for r in runs},
        key=lambda sm: (sm[0], row_order(sm[1].removesuffix("_twin")), sm[1].endswith("_twin")),
    )
    for where, method in methods:
        pair = where[0]
        chosen = [r for r in runs if setting(r) == where and r["method"] == method]
        test = [100 * r["test_acc"] for r in chosen]
        val = [100 * r["val_acc"] for r in chosen]
        test_mean, _, test_std = mean_ci(test)
        d_accs = [r["d_acc"] for r in chosen if r.get("d_acc") is not None]
        twin = twin_name(runs, where, method)
        row = {
            "pair": pair, "method": method, "setting": where, "seeds": len(chosen), "augment": where[3],
            "train_size": chosen[0]["train_size"], "epochs": chosen[0]["epochs"], "val_mean": statistics.mean(val),
            "test_mean": test_mean,
            "test_std": test_std, "test_worst": min(test), "d_acc": statistics.mean(d_accs) if d_accs else None,
            "minutes": statistics.mean(r["seconds"] for r in chosen) / 60, "twin": twin,
        }  # fmt: skip
        for label, other in (("twin", twin), ("kd", "kd")):
            diff = paired(runs, where, method, other) if other and other != method else None
            val_diff = paired(runs, where, method, other, "val_acc") if other and other != method else None
            row[f"vs_{label}"] = diff
            row[f"val_vs_{label}"] = val_diff
        rows.append(row)
    return rows


def _fmt_diff(diff: dict | None) -> str:
    if diff is None:
        return ""
    interval = "" if math.isnan(diff["low"]) else f" [{diff['low']:+.2f}, {diff['high']:+.2f}]"
    return f"{diff['mean']:+.2f}{interval} ({diff['wins']}/{diff['n']})"


def write_outputs(runs: list[dict], args: argparse.Namespace, teachers: dict[str, float]) -> None:
    rows = summarize(runs)
    with (args.out / "table.csv").open("w", newline="") as handle:
        fields = ["pair", "method", "seeds", "train_size", "epochs", "augment", "val_mean", "test_mean", "test_std",
                  "test_worst", "d_acc", "minutes", "twin", "vs_twin", "vs_kd", "val_vs_twin", "val_vs_kd"]  # fmt: skip
        writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, **{k: _fmt_diff(row[k]) for k in fields if k.startswith(("vs_", "val_vs_"))}})
    lines = [
        f"# Does the discriminator help? ({args.out.name})", "",
        "Commands: " + ", ".join(f"`{c}`" for c in sorted({r["command"] for r in runs})) + "  ",
        f"{len(runs)} runs of `runs.jsonl`, {sum(r['seconds'] for r in runs) / 3600:.1f} h of single-threaded "
        f"training. Fashion-MNIST: {args.val_size:,} validation images carved from the training set (split seed "
        f"{args.split_seed}), test set read once per run after the last epoch; students: SGD lr {args.lr} momentum "
        f"0.9 wd 5e-4, cosine, batch 128, gradient norm clipped at {args.clip}; augmented settings: random crop "
        "(padding 2) and flip, a fresh view per epoch, the teacher's outputs for each view from the view cache.",
        "",
        "Teachers (test accuracy): " + ", ".join(f"{name} {acc:.2f} %" for name, acc in teachers.items()) + ".", "",
        "Accuracies in %, last epoch. Paired differences in points: mean [95 % t-interval] (seeds won / seeds). "
        "`vs twin` is the discriminator's contribution: the row minus the same recipe with adversarial weight 0.",
        "",
        "| pair | method | seeds | train images | epochs | aug | val | test (mean +- std) | worst | D acc (val) "
        "| test vs twin | test vs KD | val vs twin | min/run |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for r in rows:
        d_acc = "" if r["d_acc"] is None else f"{r['d_acc']:.3f}"
        lines.append(
            f"| {r['pair']} | {r['method']} | {r['seeds']} | {r['train_size']:,} | {r['epochs']} "
            f"| {'yes' if r['augment'] else 'no'} | {r['val_mean']:.2f} "
            f"| {r['test_mean']:.2f} +- {r['test_std']:.2f} | {r['test_worst']:.2f} | {d_acc} "
            f"| {_fmt_diff(r['vs_twin'])} | {_fmt_diff(r['vs_kd'])} | {_fmt_diff(r['val_vs_twin'])} "
            f"| {r['minutes']:.1f} |"
        )
    lines += [
        "", "Pooled over settings: every paired seed of every setting the method ran in, one difference each.", "",
        "| method | settings | test vs twin |", "|---|---|---|",
        *(f"| {p['method']} | {p['settings']} | {_fmt_diff(p['vs_twin'])} |" for p in pooled_over_settings(runs)),
    ]  # fmt: skip
    lines += [
        "", f"Choosing the default on validation: each adversarial variant minus `{DEFAULT}`, paired on the seeds "
        "both ran. A variant replaces the default only if the 95 % interval is above 0.", "",
        "| setting | method | val vs default | replaces the default |", "|---|---|---|---|",
        *(f"| {setting_label(d['setting'])} | {d['method']} | {_fmt_diff(d['val_vs_default'])} "
          f"| {'yes' if d['replaces'] else 'no'} |" for d in default_selection(runs)),
    ]  # fmt: skip
    (args.out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    plot_differences(rows, args.out / "accuracy.png")
    plot_health(runs, args.out / "health.png")


def plot_differences(rows: list[dict], path: Path) -> None:
    import matplotlib.pyplot as plt

    shown = [r for r in rows if r["vs_twin"] is not None]
    if not shown:
        return
    fig, ax = plt.subplots(figsize=(8, 0.5 + 0.4 * len(shown)))
    labels = [f"{setting_label(r['setting'])}: {r['method']}" for r in shown]
    means = [r["vs_twin"]["mean"] for r in shown]
    errors = [0 if math.isnan(r["vs_twin"]["low"]) else r["vs_twin"]["mean"] - r["vs_twin"]["low"] for r in shown]
    ax.barh(labels, means, xerr=errors, capsize=3, color=["tab:green" if m > 0 else "tab:red" for m in means])
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_xlabel("test accuracy, row - its discriminator-off twin (points, 95 % CI)")
    ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_health(runs: list[dict], path: Path) -> None:
    import matplotlib.pyplot as plt

    adversarial = [r for r in runs if r.get("adversarial") and r["history"] and "val/d_acc_real" in r["history"][0]]
    if not adversarial:
        return
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for where, method in sorted({(setting(r), r["method"]) for r in adversarial}):
        chosen = [r["history"] for r in adversarial if setting(r) == where and r["method"] == method]
        epochs = range(1, len(chosen[0]) + 1)
        label = f"{setting_label(where)}: {method}"

        def curve(key: str, histories: list = chosen) -> list[float]:
            return [statistics.mean(h[e].get(key, math.nan) for h in histories) for e in range(len(histories[0]))]

        real, fake = curve("val/d_acc_real"), curve("val/d_acc_fake")
        axes[0].plot(epochs, [(a + b) / 2 for a, b in zip(real, fake, strict=True)], label=label)
        axes[1].plot(epochs, curve("student_feature_norm"), label=label)
        axes[2].plot(epochs, curve("feature_mean_gap"), label=label)
    teacher_norm = statistics.mean(r["history"][-1].get("teacher_feature_norm", math.nan) for r in adversarial)
    axes[1].axhline(teacher_norm, color="black", linestyle="--", label="teacher (mean over pairs)")
    axes[0].set_ylabel("discriminator accuracy (val, real and fake averaged)")
    axes[1].set_ylabel("mean L2 norm of the student feature D judges")
    axes[2].set_ylabel("|| mean teacher feature - mean student feature ||")
    for ax in axes:
        ax.set_xlabel("epoch")
    axes[0].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ---------------------------------------------------------------------- entry point


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--study", default="discriminator_study", help="results go to benchmarks/results/<study>")
    parser.add_argument("--pairs", nargs="+", default=["resnet14-lenet5"], choices=list(PAIRS))
    parser.add_argument("--rows", nargs="+", default=ROW_SETS["headline"],
                        help=f"row names ({', '.join(ROWS)}) or sets ({', '.join(ROW_SETS)})")  # fmt: skip
    parser.add_argument("--seeds", nargs="+", type=int, default=list(range(10)))
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--train-size", type=int, default=0, help="use only the first N training images (0: all)")
    parser.add_argument(
        "--augment", action="store_true", help="crop + flip, a fresh view per epoch, teacher outputs from a view cache"
    )
    parser.add_argument("--val-size", type=int, default=5000)
    parser.add_argument("--teacher-epochs", type=int, default=0, help="override the pairs' teacher budget (0: keep)")
    parser.add_argument("--split-seed", type=int, default=0)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--clip", type=float, default=5.0, help="student gradient-norm clipping, every method")
    parser.add_argument("--jobs", type=int, default=2, help="single-threaded worker processes side by side")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    parser.add_argument("--teachers-only", action="store_true", help="train the teachers and build the caches only")
    parser.add_argument("--table-only", action="store_true", help="train nothing: table runs.jsonl")
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 seed, 2 epochs, 4,000 training images")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "lightning_advkd" / "benchmarks")
    args = parser.parse_args(argv)
    args.rows = [name for item in args.rows for name in ROW_SETS.get(item, [item])]
    unknown = sorted(set(args.rows) - set(ROWS))
    if unknown:
        parser.error(f"unknown rows {unknown}; choose from {list(ROWS)} or the sets {list(ROW_SETS)}")
    if args.quick:
        args.seeds, args.epochs, args.train_size, args.teacher_epochs = [0], 2, 4000, 1
        args.study = f"{args.study}_quick"
    args.out = HERE / "results" / args.study
    args.argv = [a for i, a in enumerate(argv) if "--worker" not in (a, argv[i - 1] if i else "")]
    return args


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.worker is not None:
        index, count = (int(n) for n in args.worker.split("/"))
        work(args, index, count)
        return
    if not args.table_only:
        launch(args, argv)
    if args.teachers_only:
        return
    runs = load_runs(args.out / "runs.jsonl")
    if not runs:
        print("no runs yet")
        return
    data = datasets(args)
    teachers = {}
    for pair in sorted({r["pair"] for r in runs}):
        path = teacher_path(PAIRS[pair], args)
        if path.is_file():
            teachers[PAIRS[pair].teacher] = 100 * accuracy(train_teacher(PAIRS[pair], args), data["test"])
    write_outputs(runs, args, teachers)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
