"""Deprecated: the supervised baseline is :meth:`lightning_advkd.supervised.SupervisedClassifier.from_pair`.

It logs the metric names every module logs (``val/student_acc``, ...) and measures the teacher it is given, so the
stopgap that renamed its metrics is gone; ``StudentAlone`` remains as an alias for configs written against it.
"""

from __future__ import annotations

from lightning_advkd.supervised import SupervisedClassifier

#: Deprecated alias of :class:`~lightning_advkd.supervised.SupervisedClassifier` (use its ``from_pair``).
StudentAlone = SupervisedClassifier

__all__ = ["StudentAlone"]
