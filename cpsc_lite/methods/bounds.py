"""The two bounds every table needs (book chapters 2 and 7): KD on Gaussian-noise images (how far a
student gets from the teacher alone, with no synthesis at all) and KD on the real training images
(what the student could reach with the data: the only method that reads it)."""

from __future__ import annotations

import torch

from .. import CpscError
from ..utils import augment_batch
from .base import Method


class Noise(Method):
    family = "noise"

    def student_batch(self, n: int):
        run = self.run
        shape = (n, run.channels, run.img_size, run.img_size)
        return torch.randn(*shape, device=run.device), None


class RealData(Method):
    family = "data"
    reads_training_data = True

    def __init__(self, run):
        super().__init__(run)
        if run.train_set is None:
            raise CpscError(
                "The 'data' bound trains the student on the real training split; pass train_set "
                "(the dataset has none, or it was not given)."
            )

    def student_batch(self, n: int):
        run = self.run
        # on a GPU the images live there: indices drawn there, no copy per step
        on = getattr(run.train_set, "device", torch.device("cpu"))
        idx = torch.randint(0, len(run.train_set), (n,), device=on)
        if hasattr(run.train_set, "batch"):
            x, y = run.train_set.batch(idx)
        else:
            items = [run.train_set[int(i)] for i in idx]
            x, y = tuple(torch.utils.data.default_collate(items))
        return augment_batch(x.to(run.device), *run.augment), y.to(run.device)


# Neither trains a generator or uses CPSC-DFKD's terms.
_NO_TERMS = dict(adv=0.0, alpha=0.0, beta=0.0, gamma=0.0, eta=0.0, eta_student=0.0)
PRESETS: dict[str, dict] = {"noise": dict(_NO_TERMS), "data": dict(_NO_TERMS)}
HELP: dict[str, str] = {
    "noise": "KD on Gaussian-noise images (lower bound)",
    "data": "KD on the real training images (upper bound; the only method that reads them)",
}
FAMILY = {"noise": Noise, "data": RealData}
