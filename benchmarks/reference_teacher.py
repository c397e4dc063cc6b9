"""The reference Fashion-MNIST teacher shipped in ``lightning_advkd/weights``: its test accuracy and SHA-256.

Loads the shipped file into ResNet-14 (10 classes, 1 channel), runs it over the 10,000 test images of the installed
Fashion-MNIST (``/usr/share/datasets/fashion-mnist``, Debian's ``dataset-fashion-mnist``) and prints the accuracy, the
file's SHA-256 and the digest of the test labels that identifies the dataset; also the accuracy the weights would have
if stored in fp16 (the file is kept in fp32). ``--write`` records the three measured values in the metadata file the
app verifies (``lightning_advkd/weights/fmnist_resnet14.json``)::

    nice -n 10 python benchmarks/reference_teacher.py [--write]
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from torch import nn

from lightning_advkd._atomic import sha256_file
from lightning_advkd.app.teachers import REFERENCE_DIR, labels_digest
from lightning_advkd.data import FashionMNISTDataModule
from lightning_advkd.models import create_model, load_weights

NAME = "fmnist_resnet14"


def accuracy(model: nn.Module, data: FashionMNISTDataModule) -> float:
    correct = total = 0
    with torch.no_grad():
        for images, labels in data.test_dataloader():
            correct += int((model(images).argmax(1) == labels).sum())
            total += len(labels)
    return correct / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help=f"record the measurements in {NAME}.json")
    args = parser.parse_args()
    meta_path = REFERENCE_DIR / f"{NAME}.json"
    meta = json.loads(meta_path.read_text())
    weights = REFERENCE_DIR / meta["file"]
    data = FashionMNISTDataModule(eval_batch_size=1000)
    data.setup("test")
    model = create_model(meta["architecture"], num_classes=meta["num_classes"], in_chans=meta["in_chans"]).eval()
    load_weights(model, weights)
    start = time.perf_counter()
    measured = {
        "sha256": sha256_file(weights),
        "bytes": weights.stat().st_size,
        "test_acc": accuracy(model, data),
        "test_labels_sha256": labels_digest(data),
    }
    seconds = time.perf_counter() - start
    half = {k: v.half().float() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    model.load_state_dict(half)
    fp16_acc = accuracy(model, data)
    print(f"{weights} ({measured['bytes']:,} bytes)\n  sha256 {measured['sha256']}")
    print(f"  test accuracy {100 * measured['test_acc']:.2f} % (10,000 images, {seconds:.0f} s)")
    print(f"  test accuracy if stored in fp16 {100 * fp16_acc:.2f} %")
    print(f"  test labels sha256 {measured['test_labels_sha256']}")
    if args.write:
        meta.update(measured)
        meta_path.write_text(json.dumps(meta, indent=2) + "\n")
        print(f"recorded in {meta_path}")


if __name__ == "__main__":
    main()
