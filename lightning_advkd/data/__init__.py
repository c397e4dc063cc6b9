"""LightningDataModules for the datasets of the paper, one file per family, and a name -> class mapping."""

from lightning_advkd.data._base import ImageClassificationDataModule
from lightning_advkd.data.cifar import CIFAR10DataModule, CIFAR100DataModule, CIFARPickleDataset
from lightning_advkd.data.fashion_mnist import FashionMNISTDataModule, IDXFormatError, IDXImageDataset, read_idx
from lightning_advkd.data.imagenet import ImageNetDataModule
from lightning_advkd.data.splits import TransformedSubset
from lightning_advkd.data.svhn import SVHNDataModule, SVHNMatDataset
from lightning_advkd.data.tensor_transforms import TensorImageTransform
from lightning_advkd.data.unlabeled import UnlabeledImageFolderDataModule

#: Datamodule classes by the short name configs and the command line use.
DATAMODULES: dict[str, type[ImageClassificationDataModule]] = {
    "cifar10": CIFAR10DataModule,
    "cifar100": CIFAR100DataModule,
    "svhn": SVHNDataModule,
    "fashion_mnist": FashionMNISTDataModule,
    "imagenet": ImageNetDataModule,
    "unlabeled": UnlabeledImageFolderDataModule,
}

__all__ = [
    "DATAMODULES",
    "CIFAR10DataModule",
    "CIFAR100DataModule",
    "CIFARPickleDataset",
    "FashionMNISTDataModule",
    "IDXFormatError",
    "IDXImageDataset",
    "ImageClassificationDataModule",
    "ImageNetDataModule",
    "SVHNDataModule",
    "SVHNMatDataset",
    "TensorImageTransform",
    "TransformedSubset",
    "UnlabeledImageFolderDataModule",
    "read_idx",
]
