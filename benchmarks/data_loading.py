"""Does data loading slow training down? A whole epoch on the real Fashion-MNIST loader vs compute only.

For each method, one training epoch over the 60,000 real Fashion-MNIST images runs twice in one invocation:

  loader        the package's FashionMNISTDataModule train loader (IDX files decoded once, per-sample augmentation
                and normalization in the loader, ``--workers`` processes), as ``make train`` uses it
  in-memory     the very same batches, produced by that loader beforehand and replayed from memory: compute only

and the ratio of their images/s is the data-loading efficiency (target: at least 0.9). Both timings cover the whole
``Trainer.fit`` (setup, the epoch, teardown); validation is off; the two alternate over several rounds and the medians
are compared, so drift of the machine hits both alike. Methods:

  supervised    the LeNet-5 student with labels: the fastest step, so the most demanding of the loader
  anc           ANC, resnet14 -> LeNet-5 (the main job's pair), live teacher
  anc_cached    the same reading teacher outputs from the teacher-output cache (un-augmented loader, as the cache
                requires): almost as fast a step as ``supervised``

Usage:
  python benchmarks/data_loading.py                      # writes benchmarks/results/data_loading.{md,json}
  python benchmarks/data_loading.py --workers 0 2 --methods supervised
"""

from __future__ import annotations

import argparse
import functools
import platform
import statistics
import sys
import time
from pathlib import Path

import lightning as L
import torch
from _results import write_results
from torch.utils.data import DataLoader, Dataset

from lightning_advkd import AdversarialDistillation, AdversarialSamples, TeacherOutputCache
from lightning_advkd.data import FashionMNISTDataModule
from lightning_advkd.models import create_model
from lightning_advkd.supervised import SupervisedClassifier

RESULTS = Path(__file__).parent / "results"
METHODS = ("supervised", "anc", "anc_cached")
BATCH_SIZE = 128


class ReplayedBatches(Dataset):
    """Already collated batches, served one per index (use with ``DataLoader(batch_size=None)``)."""

    def __init__(self, batches: list) -> None:
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, index: int):
        return self.batches[index]


def build_module(method: str) -> L.LightningModule:
    torch.manual_seed(0)
    student = create_model("lenet5", num_classes=10, in_chans=1)
    sgd = functools.partial(torch.optim.SGD, lr=0.01, momentum=0.9, weight_decay=5e-4)
    if method == "supervised":
        return SupervisedClassifier(student, 10, optimizer=sgd, milestones=())
    teacher = create_model("resnet14", num_classes=10, in_chans=1).eval()
    return AdversarialDistillation(teacher, student, student_optimizer=sgd, student_grad_clip=5.0)


def make_loader(method: str, module: L.LightningModule, workers: int) -> DataLoader:
    """The datamodule's own train loader; for ``anc_cached`` its un-augmented set wrapped in the teacher cache."""
    data = FashionMNISTDataModule(
        batch_size=BATCH_SIZE, num_workers=workers, augment=method != "anc_cached", seed=0, drop_last=True
    )
    data.setup("fit")
    if method != "anc_cached":
        return data.train_dataloader()
    cached = TeacherOutputCache(data.train_set, module.teacher, batch_size=512)
    return DataLoader(
        cached, batch_size=BATCH_SIZE, shuffle=True, drop_last=True, num_workers=workers,
        persistent_workers=False, generator=torch.Generator().manual_seed(0),
    )  # fmt: skip


def images_per_second(module: L.LightningModule, loader: DataLoader, method: str) -> tuple[float, int]:
    """Images/s over one whole ``Trainer.fit`` epoch, and the number of images."""
    callbacks = [AdversarialSamples()] if method != "supervised" else []
    trainer = L.Trainer(
        accelerator="cpu", devices=1, max_epochs=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0,
        callbacks=callbacks,
    )  # fmt: skip
    start = time.perf_counter()
    trainer.fit(module, loader)
    seconds = time.perf_counter() - start
    images = trainer.fit_loop.epoch_loop.batch_progress.total.completed * BATCH_SIZE
    return images / seconds, images


def benchmark_method(method: str, args: argparse.Namespace, log) -> dict:
    """In-memory and loader epochs, interleaved over ``args.rounds`` rounds; medians and their ratios."""
    # The replayed batches come from the same loader (workers 0), so both runs see identical tensors.
    batches = list(make_loader(method, build_module(method), workers=0))
    samples: dict[str, list[float]] = {"in_memory": [], **{f"workers_{w}": [] for w in args.workers}}
    for round_index in range(args.rounds):
        rate, images = images_per_second(build_module(method), DataLoader(ReplayedBatches(batches), None), method)
        samples["in_memory"].append(rate)
        log(f"[round {round_index + 1}] {method:>11} in-memory: {rate:8.0f} images/s ({images} images)")
        for workers in args.workers:
            module = build_module(method)
            rate, _ = images_per_second(module, make_loader(method, module, workers), method)
            samples[f"workers_{workers}"].append(rate)
            log(f"[round {round_index + 1}] {method:>11} loader, {workers} workers: {rate:8.0f} images/s")
    in_memory = statistics.median(samples["in_memory"])
    loader = {w: statistics.median(samples[f"workers_{w}"]) for w in args.workers}
    return {
        "in_memory_images_per_s": in_memory, "images": images, "loader_images_per_s": loader,
        "ratio": {w: rate / in_memory for w, rate in loader.items()}, "samples": samples,
    }  # fmt: skip


def to_markdown(results: dict, args: argparse.Namespace) -> str:
    lines = [
        "# Data loading: a whole epoch with the loader vs compute only", "",
        f"Command: `{' '.join(['python', 'benchmarks/data_loading.py', *args.argv])}`  ",
        f"Machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, torch "
        f"{torch.__version__}; real Fashion-MNIST train set (60,000 images), batch {BATCH_SIZE}, one epoch per "
        f"measurement, median of {args.rounds} interleaved rounds. Target: loader / in-memory >= 0.9.", "",
        "| method | in-memory images/s | " + " | ".join(f"loader, {w} workers" for w in args.workers) + " |",
        "|---|---|" + "---|" * len(args.workers),
    ]  # fmt: skip
    for method, r in results.items():
        cells = [f"{r['loader_images_per_s'][w]:.0f} ({r['ratio'][w]:.3f})" for w in args.workers]
        lines.append(f"| {method} | {r['in_memory_images_per_s']:.0f} | " + " | ".join(cells) + " |")
    lines += ["", "Loader cells: images/s (ratio to in-memory)."]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--workers", nargs="+", type=int, default=[0, 1, 2], help="loader worker counts to try")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved repetitions; medians are reported")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--out", type=Path, default=RESULTS / "data_loading")
    args = parser.parse_args(argv)
    args.argv = argv
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    torch.set_num_threads(args.threads)
    results = {method: benchmark_method(method, args, print) for method in args.methods}
    write_results(args.out, results, to_markdown(results, args))


if __name__ == "__main__":
    main()
