"""What a method gets from the run, and the parts several method families share.

A *method family* (CPSC-DFKD, DFAD, DAFL, DeepInversion, CMI, the noise/data bounds) decides two
things of an iteration: how the synthetic images are made (:meth:`Method.synthesise`: generator
updates, or a batch optimised from scratch) and what the student learns from them
(:meth:`Method.student_batch`, :meth:`Method.student_objective`). Everything else (networks,
optimisers, precision, several GPUs, checkpoints) is the run's: :class:`Run` is the part of
:class:`cpsc_lite.distill.Distiller` a method may use. Methods import this module and
:mod:`cpsc_lite.losses`, never the Distiller or each other.
"""

from __future__ import annotations

from typing import Optional, Protocol

import torch
from torch import nn

from ..config import DistillConfig
from ..generator import generate_per_class
from ..losses import kl_divergence, pseudo_ce, total_variation


class Run(Protocol):
    """The run as a method sees it (implemented by :class:`cpsc_lite.distill.Distiller`).

    ``teacher``, ``student``, ``generator`` and ``projection`` are the plain modules (what
    checkpoints hold); the forward helpers below run them with the run's precision, memory layout,
    compilation and data parallelism. ``batch_size`` is this process's share of the batch.
    """

    cfg: DistillConfig
    device: torch.device
    batch_size: int
    num_classes: int
    channels: int
    img_size: int
    iteration: int
    teacher_meta: dict
    teacher: nn.Module
    student: nn.Module
    generator: nn.Module
    projection: nn.Module
    opt_g: torch.optim.Optimizer
    sched_g: object
    scaler_g: object
    amp_dtype: Optional[torch.dtype]
    train_set: object
    augment: tuple

    def teacher_forward(self, x, features: bool = False, bn: bool = False): ...

    def bn_prior(self) -> torch.Tensor: ...

    def student_forward(self, x, features: bool = False): ...

    def generate(self, z, y, train: bool = True) -> torch.Tensor: ...

    def autocast(self): ...

    def update(self, optimizer, scaler, loss, unwrapped_params=(), also=()) -> None: ...

    def step_schedule(self, scheduler) -> None: ...


class Method:
    """One method family's part of every iteration. Subclasses override what differs."""

    #: The family's name (the methods of :data:`cpsc_lite.methods.METHODS` name theirs).
    family = ""
    #: Whether the run's generator is this method's product (generator.pt, samples.png).
    saves_generator = True
    #: Whether the method reads the real training images (only the ``data`` bound does).
    reads_training_data = False
    #: The config sections the family reads (besides the budget, optimisers and logging).
    sections: tuple = ()

    def __init__(self, run: Run):
        self.run = run
        self.cfg = run.cfg

    @classmethod
    def uses_bn_prior(cls, cfg: DistillConfig) -> bool:
        """Whether the run must record the teacher's BN statistics (the BN prior's hooks)."""
        return False

    def synthesise(self) -> dict:
        """The synthesis work of one iteration (generator updates, or a batch optimised from
        scratch); returns the loss terms to log. The bounds synthesise nothing."""
        return {}

    def student_batch(self, n: int) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """``n`` inputs for a student step and their labels (None where there are none)."""
        raise NotImplementedError

    def student_objective(self, t_logits, s_logits, labels, t_feat, s_feat):
        """The student's loss for one batch and its terms: KL(softmax(t) || softmax(s))."""
        terms = {"kd": kl_divergence(t_logits, s_logits)}
        terms["total"] = terms["kd"]
        return terms["kd"], terms

    def diagnostic_inputs(self, per_class: int):
        """``(images, conditioning labels or None)`` judged at each evaluation; None: the student's
        own inputs (the run draws them with a fixed seed)."""
        return None

    def labelled_samples(self, per_class: int):
        """``(images, labels)`` of every class for the end-of-run measures (teacher agreement, pixel
        judge), or None where images have no class they were made for."""
        return None

    def sample_grid(self, per_class: int) -> dict:
        """What samples.png shows: ``images``, ``labels``, ``what`` they are, and whether to mark the
        teacher's predictions. By default the generator's images of every class."""
        g = self.run.generator
        images, labels = generate_per_class(g, per_class, self.run.device)
        return dict(
            images=images,
            labels=labels,
            what="generator",
            predictions=self.cfg.generator.conditional,
        )

    def state_dict(self) -> dict:
        """What the method keeps between iterations beyond the run's networks (pools, heads)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def close(self) -> None:
        pass


# ----------------------------------------------------------------- shared parts
def augment_views(x: torch.Tensor, jitter: int, flip: bool) -> torch.Tensor:
    """DeepInversion's augmentation of synthetic images before the teacher sees them: one random
    shift (up to ``jitter`` pixels, wrapping around) and a random horizontal flip for the whole
    batch; identity when both are off."""
    if jitter:
        dx, dy = (int(v) for v in torch.randint(-jitter, jitter + 1, (2,)))
        x = torch.roll(x, shifts=(dx, dy), dims=(2, 3))
    if flip and bool(torch.rand(()) < 0.5):
        x = torch.flip(x, dims=(3,))
    return x


def add_image_priors(loss, terms: dict, images, objective) -> torch.Tensor:
    """DeepInversion's image priors, where their weights are on: total variation and the L2 norm
    of the (normalised) images. Adds them to ``loss`` and ``terms``."""
    if objective.prior_tv:
        terms["prior_tv"] = total_variation(images)
        loss = loss + objective.prior_tv * terms["prior_tv"]
    if objective.prior_l2:
        terms["prior_l2"] = images.pow(2).mean()
        loss = loss + objective.prior_l2 * terms["prior_l2"]
    return loss


def inversion_terms(run: Run, t_logits, labels, images) -> tuple[torch.Tensor, dict]:
    """What a batch being optimised from scratch (DeepInversion's pixels, CMI's re-initialised
    generator) minimises in common: beta x the BN prior, eta x CE to its target labels, and the
    image priors."""
    objective = run.cfg.objective
    terms: dict = {}
    loss = t_logits.new_zeros(())
    if objective.beta:
        terms["bn"] = run.bn_prior()
        loss = loss + objective.beta * terms["bn"]
    if objective.eta:
        terms["ce_teacher"] = pseudo_ce(t_logits, labels)
        loss = loss + objective.eta * terms["ce_teacher"]
    if objective.prior_tv or objective.prior_l2:
        loss = add_image_priors(loss, terms, images.float(), objective)
    return loss, terms


def averaged(steps: list) -> dict:
    """The mean of each term over several steps' term dicts (one log line per iteration)."""
    out: dict = {}
    for terms in steps:
        for k, v in terms.items():
            out[k] = out.get(k, 0) + v / len(steps)
    return out


class SamplePool:
    """Synthetic images and their target labels, kept for the student (DeepInversion's pool).

    Holds at most ``capacity`` images; the oldest are replaced first. Storage grows by doubling,
    so a large capacity costs memory only once it is used."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.images: Optional[torch.Tensor] = None
        self.labels: Optional[torch.Tensor] = None
        self.size = 0
        # where the next image goes (equal to size until the pool is full)
        self.next = 0

    def add(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        images = images.detach()[-self.capacity :]
        labels = labels.detach()[-self.capacity :]
        n = len(images)
        if self.images is None:
            self.images = images.new_empty((0,) + images.shape[1:])
            self.labels = labels.new_empty(0)
        need = min(self.capacity, self.size + n)
        if need > len(self.images):  # grow by doubling, at most to the capacity
            grow = min(self.capacity, max(2 * len(self.images), need))
            grow -= len(self.images)
            self.images = torch.cat(
                [self.images, images.new_empty((grow,) + images.shape[1:])]
            )
            self.labels = torch.cat([self.labels, labels.new_empty(grow)])
        # next == size until full
        where = (self.next + torch.arange(n, device=images.device)) % self.capacity
        self.images[where] = images
        self.labels[where] = labels
        self.next = (self.next + n) % self.capacity
        self.size = need

    def sample(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` images drawn uniformly with replacement (the global random stream: seeded, resumable)."""
        idx = torch.randint(0, self.size, (n,), device=self.images.device)
        return self.images[idx], self.labels[idx]

    def latest(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``n`` most recently added images, oldest first (fewer if the pool holds fewer)."""
        n = min(n, self.size)
        idx = (self.next - n + torch.arange(n, device=self.images.device)) % (
            self.capacity
        )
        return self.images[idx], self.labels[idx]

    def per_class(
        self, num_classes: int, per_class: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The newest ``per_class`` images of each class, grouped by class (for samples.png).

        With random target labels (CMI) a class may have fewer: its images are then repeated, and
        a class with none gets blank images, so that the grid stays ``num_classes`` rows."""
        x, y = self.latest(self.size)
        images = []
        for c in range(num_classes):
            idx = torch.nonzero(y == c).flatten()[-per_class:]
            if len(idx):
                repeat = torch.arange(per_class, device=idx.device) % len(idx)
                images.append(x[idx[repeat]])
            else:
                shape = (per_class,) + tuple(x.shape[1:])
                images.append(torch.zeros(shape, dtype=x.dtype, device=x.device))
        labels = torch.arange(num_classes, device=y.device).repeat_interleave(per_class)
        return torch.cat(images), labels

    def state_dict(self) -> dict:
        if self.images is None:
            return dict(size=0, next=0)
        return dict(
            images=self.images[: self.size].clone(),
            labels=self.labels[: self.size].clone(),
            size=self.size,
            next=self.next,
        )

    def load_state_dict(self, state: dict, device) -> None:
        self.size, self.next = int(state["size"]), int(state["next"])
        if self.size:
            self.images = state["images"].to(device)
            self.labels = state["labels"].to(device)


class PoolMethod(Method):
    """A method that optimises batches from scratch into a pool the student learns from
    (DeepInversion, CMI): a new batch every ``inversion.every`` iterations; the run's generator
    is not its product (its images are: transfer_set.npz)."""

    saves_generator = False
    sections = ("objective", "inversion")

    def __init__(self, run: Run):
        super().__init__(run)
        self.pool = SamplePool(max(1, self.cfg.inversion.pool_batches) * run.batch_size)

    @classmethod
    def uses_bn_prior(cls, cfg: DistillConfig) -> bool:
        return cfg.objective.beta > 0

    def synthesise(self) -> dict:
        if self.run.iteration % self.cfg.inversion.every:
            return {}
        return self.invert()

    def invert(self) -> dict:
        """Optimise one batch and add it to the pool; returns its last step's terms."""
        raise NotImplementedError

    def student_batch(self, n: int):
        return self.pool.sample(n)

    def diagnostic_inputs(self, per_class: int):
        return self.pool.latest(per_class * self.run.num_classes)

    def labelled_samples(self, per_class: int):
        return self.pool.latest(per_class * self.run.num_classes)

    def sample_grid(self, per_class: int) -> dict:
        images, labels = self.pool.per_class(self.run.num_classes, per_class)
        return dict(
            images=images, labels=labels, what="inverted images", predictions=True
        )

    def transfer_set(self):
        """The optimised images and their target labels: the method's product."""
        return self.pool.latest(self.pool.size)

    def state_dict(self) -> dict:
        return dict(pool=self.pool.state_dict())

    def load_state_dict(self, state: dict) -> None:
        if "pool" in state:
            self.pool.load_state_dict(state["pool"], self.run.device)

    def _frozen_student(self):
        """The student only judges while a batch is optimised: no gradients, eval mode (as published)."""
        self.run.student.requires_grad_(False)
        self.run.student.eval()

    def _thawed_student(self):
        self.run.student.requires_grad_(True)
        self.run.student.train()


class GeneratorMethod(Method):
    """A method that trains the run's generator against the teacher (and the student) and feeds the
    student fresh generated batches: CPSC-DFKD, DFAD, DAFL. Subclasses give the generator's
    objective (:meth:`generator_objective`) and say whether it needs the student's view."""

    sections = ("generator", "objective")

    def __init__(self, run: Run):
        super().__init__(run)
        replay = self.cfg.generator.replay
        self.replay_pool = (
            SamplePool(self.cfg.generator.replay_batches * run.batch_size)
            if replay
            else None
        )

    def trains(self) -> bool:
        """Whether the generator has an objective at all (a method with every term off has none)."""
        return True

    def needs_student(self) -> bool:
        """Whether the generator's objective reads the student's logits and features."""
        return False

    def adversarial_on(self) -> bool:
        """Whether the generator maximises the disagreement now (off for the first ``adv_warmup``)."""
        objective, budget = self.cfg.objective, self.cfg.budget
        return bool(objective.adv) and self.run.iteration >= int(
            objective.adv_warmup * budget.iters
        )

    def generator_inputs(self):
        """Noise and labels for one generator step."""
        return self.run.generator.sample_inputs(self.run.batch_size, self.run.device)

    def generator_objective(self, batch: dict) -> tuple[torch.Tensor, dict]:
        raise NotImplementedError

    def extra_terms(self, loss, terms: dict, batch: dict) -> torch.Tensor:
        """Terms outside the family's objective that this method adds (none by default)."""
        return loss

    def before_generator_update(self) -> None:
        pass

    def synthesise(self) -> dict:
        if not self.trains():
            return {}
        steps = [self.generator_step() for _ in range(self.cfg.budget.g_steps)]
        self.run.step_schedule(self.run.sched_g)
        return averaged(steps)

    def generator_step(self) -> dict:
        """One update of G (and the projection) on a fresh batch; returns the loss terms."""
        run, objective = self.run, self.cfg.objective
        run.generator.train()
        run.student.requires_grad_(False)
        z, y = self.generator_inputs()
        s_logits = s_feat = None
        with run.autocast():
            x = run.generate(z, y)
            x_in = augment_views(x, objective.jitter, objective.flip)
            t_logits, t_feat = run.teacher_forward(
                x_in, features=True, bn=objective.beta > 0
            )
            if self.needs_student():
                s_logits, s_feat = run.student_forward(x_in, features=True)
        # every loss in float32 (no-ops in float32)
        batch = dict(
            images=x,
            noise=z,
            labels=y,
            t_logits=t_logits.float(),
            t_feat=t_feat.float(),
            s_logits=None if s_logits is None else s_logits.float(),
            s_feat=None if s_feat is None else s_feat.float(),
        )
        loss, terms = self.generator_objective(batch)
        if objective.prior_tv or objective.prior_l2:
            loss = add_image_priors(loss, terms, x.float(), objective)
        loss = self.extra_terms(loss, terms, batch)
        terms["total"] = loss
        self.before_generator_update()
        run.update(
            run.opt_g, run.scaler_g, loss, unwrapped_params=run.projection.parameters()
        )
        run.student.requires_grad_(True)
        return {k: v.detach() for k, v in terms.items()}

    def pseudo_labels(self, y, t_logits):
        """The conditioning label; an unconditional generator's images get the teacher's argmax."""
        return y if self.cfg.generator.conditional else t_logits.detach().argmax(1)

    def fresh(self, n: int):
        """A batch of generated images (no gradient to G) and their labels."""
        z, y = self.run.generator.sample_inputs(n, self.run.device)
        with torch.no_grad(), self.run.autocast():
            return self.run.generate(z, y, train=False), y

    def student_batch(self, n: int):
        if self.replay_pool is None:
            return self.fresh(n)
        old = round(self.cfg.generator.replay * n) if self.replay_pool.size else 0
        x, y = self.fresh(n - old)
        if old:
            x_old, y_old = self.replay_pool.sample(old)
            self.replay_pool.add(x, y)
            return torch.cat([x, x_old.to(x.dtype)]), torch.cat([y, y_old])
        self.replay_pool.add(x, y)
        return x, y

    def diagnostic_inputs(self, per_class: int):
        x, y = generate_per_class(
            self.run.generator, per_class, self.run.device, seed=1234
        )
        return x, (y if self.cfg.generator.conditional else None)

    def labelled_samples(self, per_class: int):
        if not self.cfg.generator.conditional:
            return None
        # in chunks: a whole CIFAR-100 batch of generator activations would not fit a GPU
        return generate_per_class(
            self.run.generator, per_class, self.run.device, seed=4321, batch_size=256
        )

    def state_dict(self) -> dict:
        if self.replay_pool is None:
            return {}
        return dict(replay_pool=self.replay_pool.state_dict())

    def load_state_dict(self, state: dict) -> None:
        if self.replay_pool is not None and "replay_pool" in state:
            self.replay_pool.load_state_dict(state["replay_pool"], self.run.device)
