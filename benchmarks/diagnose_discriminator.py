"""Why does the discriminator saturate at the defaults? Discriminator-health measurements over short trainings.

For a few ANC recipes on the resnet14 -> lenet5 pair of ``discriminator_study.py`` (same teacher, validation split
and caches), it trains a LeNet-5 student and, after every epoch, measures on 2,000 validation images:

* the discriminator's accuracy on teacher and student features;
* how the two feature sets differ in ways a discriminator can read trivially: the share of negative coordinates
  (the teacher's pooled feature follows a ReLU and an average pool, so it is never negative), mean L2 norms, and the
  accuracy of three fixed probes that are not trained against the student: "any coordinate < 0 means student",
  the best threshold on the L2 norm, and a logistic regression fitted afresh on half of the vectors and scored on the
  other half (how separable the two sets are to a linear model, whatever D did);
* the student's gradient from the adversarial term against the one from the KL term (norm ratio, over the student's
  and adapter's parameters).

Outputs ``benchmarks/results/discriminator_study/diagnosis.md`` (+ ``diagnosis.json``, ``diagnosis.png``).

Usage:
  python benchmarks/diagnose_discriminator.py                  # the committed diagnosis (minutes, 1 thread)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import discriminator_study as S
import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback
from torch.utils.data import DataLoader

from lightning_advkd import AdversarialDistillation, FeatureTap
from lightning_advkd import functional as AF
from lightning_advkd.objective import total
from lightning_advkd.teacher_cache import TEACHER_LOGITS

RECIPES = {
    "anc_default": S.ROWS["anc_default"],
    "anc_paper": S.ROWS["anc_paper"],
    "anc_wadv1": S.ROWS["anc_wadv1"],
    "anc_dlr_low": S.ROWS["anc_dlr_low"],
    "anc_conditional": S.ROWS["anc_conditional"],
    "anc_logits": S.ROWS["anc_logits"],
    "anc_relu_adapter": S.ROWS["anc_relu_adapter"],
    "anc_relu_wadv1": S.ROWS["anc_relu_wadv1"],
}


def probe_accuracies(real: torch.Tensor, fake: torch.Tensor) -> dict[str, float]:
    """Accuracy of fixed probes that tell teacher (real) from student (fake) vectors; 0.5 is chance."""
    n = min(len(real), len(fake))
    real, fake = real[:n], fake[:n]
    negative_rule = 0.5 * (
        float((real.min(1).values >= 0).float().mean()) + float((fake.min(1).values < 0).float().mean())
    )
    norms = torch.cat([real.norm(dim=1), fake.norm(dim=1)])
    labels = torch.cat([torch.ones(n), torch.zeros(n)])
    best_norm = max(
        max(float(((norms > t) == labels.bool()).float().mean()), float(((norms <= t) == labels.bool()).float().mean()))
        for t in norms.quantile(torch.linspace(0.01, 0.99, 99))
    )
    return {"probe_negative": negative_rule, "probe_norm": best_norm, "probe_linear": linear_probe(real, fake)}


def linear_probe(real: torch.Tensor, fake: torch.Tensor, steps: int = 300) -> float:
    """Held-out accuracy of a logistic regression fitted on half of the vectors (standardized, full-batch Adam)."""
    x = torch.cat([real, fake])
    y = torch.cat([torch.ones(len(real)), torch.zeros(len(fake))])
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    x, y = x[order], y[order]
    half = len(x) // 2
    mean, std = x[:half].mean(0), x[:half].std(0) + 1e-6
    x = (x - mean) / std
    weight = torch.zeros(x.shape[1], requires_grad=True)
    bias = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.Adam([weight, bias], lr=0.05)
    with torch.enable_grad():
        for _ in range(steps):
            optimizer.zero_grad()
            F.binary_cross_entropy_with_logits(x[:half] @ weight + bias, y[:half]).backward()
            optimizer.step()
    with torch.no_grad():
        return float((((x[half:] @ weight + bias) > 0).float() == y[half:]).float().mean())


def gradient_ratio(module: AdversarialDistillation, batch: dict) -> float:
    """||grad of the weighted adversarial term|| / ||grad of the weighted data term|| on student + adapter weights."""
    params = [p for p in [*module.student.parameters(), *module.adapter.parameters()] if p.requires_grad]
    tap = FeatureTap(module.student, module.student_tap.tap, role="student")
    with tap.capture():
        logits = module.student(batch["image"])
    features = module.adapter(tap.pop())
    teacher_logits = batch[TEACHER_LOGITS]
    hp, temperature = module.hparams, module.objective.kd_temperature
    judged = features if hp.discriminator_input == "features" else F.softmax(logits / temperature, dim=1)
    if hp.conditional_discriminator:
        judged = AF.conditioned(judged, teacher_logits, temperature)
    adversarial = hp.adversarial_weight * AF.generator_loss(module.discriminator(judged))
    data = total(module.objective.terms(logits, teacher_logits))
    norms = []
    for term in (adversarial, data):
        grads = torch.autograd.grad(term, params, retain_graph=True, allow_unused=True)
        norms.append(torch.sqrt(sum(g.pow(2).sum() for g in grads if g is not None)))
    return float(norms[0] / norms[1])


class Health(Callback):
    """Per-epoch discriminator health on a fixed validation batch."""

    def __init__(self, probe: dict) -> None:
        self.probe = probe
        self.epochs: list[dict[str, float]] = []

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: AdversarialDistillation) -> None:
        # after this epoch's validation (its metrics are in callback_metrics), outside inference mode
        real, fake = pl_module.features(self.probe)
        record = {
            "epoch": trainer.current_epoch + 1,
            "val_acc": float(trainer.callback_metrics["val/student_acc"]),
            "d_acc_real": float(trainer.callback_metrics["val/d_acc_real"]),
            "d_acc_fake": float(trainer.callback_metrics["val/d_acc_fake"]),
            "negative_share_teacher": float((real < 0).float().mean()),
            "negative_share_student": float((fake < 0).float().mean()),
            "norm_teacher": float(real.norm(dim=1).mean()),
            "norm_student": float(fake.norm(dim=1).mean()),
            "grad_ratio_adv_to_data": gradient_ratio(pl_module, self.probe),
            **probe_accuracies(real, fake),
        }
        self.epochs.append(record)


def run(name: str, data: dict, args: argparse.Namespace) -> list[dict]:
    pair = S.PAIRS["resnet14-lenet5"]
    teacher = S.train_teacher(pair, args)
    L.seed_everything(0, verbose=False)
    student = S.create_model(pair.student, num_classes=S.NUM_CLASSES, in_chans=1)
    row = RECIPES[name]
    module = S.build_module(row, teacher, student, args)
    probe = next(iter(DataLoader(data["val_cached"], batch_size=2000)))
    health = Health(probe)
    callbacks = [health, *(S.REGULARIZERS[reg](weight=weight) for reg, weight in row.regularizers)]
    trainer = L.Trainer(
        accelerator="cpu", devices=1, max_epochs=args.epochs, logger=False, enable_checkpointing=False,
        enable_model_summary=False, enable_progress_bar=False, num_sanity_val_steps=0, callbacks=callbacks,
    )  # fmt: skip
    loader = DataLoader(data["train_cached"], batch_size=128, shuffle=True, generator=torch.Generator().manual_seed(0))
    trainer.fit(module, loader, DataLoader(data["val_cached"], batch_size=1000))
    return health.epochs


def write(results: dict[str, list[dict]], args: argparse.Namespace, seconds: float) -> None:
    out = args.out
    (out / "diagnosis.json").write_text(json.dumps(results, indent=1))
    keys = [
        "d_acc_real", "d_acc_fake", "negative_share_teacher", "negative_share_student", "norm_teacher", "norm_student",
        "probe_negative", "probe_norm", "probe_linear", "grad_ratio_adv_to_data", "val_acc",
    ]  # fmt: skip
    lines = [
        "# Discriminator health (diagnosis)", "",
        f"Command: `python benchmarks/diagnose_discriminator.py {' '.join(args.argv)}`  ",
        f"resnet14 -> lenet5, seed 0, first {args.train_size:,} training images, {args.epochs} epochs, measured after "
        f"each epoch on 2,000 validation images; {seconds / 60:.1f} min on one thread. Probe accuracies: 0.5 is "
        "chance, 1.0 separates teacher from student features perfectly without any training against the student.", "",
        "Last epoch:", "",
        "| recipe | " + " | ".join(keys) + " |",
        "|---|" + "---|" * len(keys),
    ]  # fmt: skip
    for name, epochs in results.items():
        last = epochs[-1]
        lines.append(f"| {name} | " + " | ".join(f"{last[k]:.3f}" for k in keys) + " |")
    (out / "diagnosis.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    plot(results, out / "diagnosis.png")


def plot(results: dict[str, list[dict]], path: Path) -> None:
    import matplotlib.pyplot as plt

    panels = [("d_acc_fake", "D accuracy on student features"), ("negative_share_student", "share of negative "
              "coordinates, student (teacher: 0)"), ("probe_linear", "fresh linear probe accuracy"),
              ("grad_ratio_adv_to_data", "|grad adversarial| / |grad KL| (student)")]  # fmt: skip
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6))
    for ax, (key, title) in zip(axes, panels, strict=True):
        for name, epochs in results.items():
            ax.plot([e["epoch"] for e in epochs], [e[key] for e in epochs], marker="o", label=name)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("epoch")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--train-size", type=int, default=20000)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    study = S.parse_args(["--train-size", str(args.train_size), "--epochs", str(args.epochs)])
    study.argv, args.argv, args.out = argv, argv, study.out
    torch.set_num_threads(args.threads)
    start = time.time()
    data = S.datasets(study)
    data = S.build_caches(S.train_teacher(S.PAIRS["resnet14-lenet5"], study), data, study)
    results = {name: run(name, data, study) for name in args.recipes}
    args.out.mkdir(parents=True, exist_ok=True)
    write(results, args, time.time() - start)


if __name__ == "__main__":
    main()
