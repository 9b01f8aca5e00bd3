"""The distillation run in memory (book chapter 6): the networks, their optimisers, and one iteration.

One *iteration* is the method's synthesis (for CPSC-DFKD: ``g_steps`` generator updates) followed
by ``s_steps`` student updates, each on a fresh batch. *What* is computed is the method's
(:mod:`cpsc_lite.methods`); :class:`Distiller` owns the networks, the optimisers and schedules,
precision, several GPUs and the state a checkpoint holds. The teacher never changes; real images
are read only to *evaluate* the student (the ``data`` bound aside).

On a GPU the same loop runs faster without changing the method (:mod:`cpsc_lite.engine`, book
chapter 8): mixed precision (losses stay in float32), channels-last layouts, fused optimisers,
optional ``torch.compile``, and several GPUs with DistributedDataParallel
(:mod:`cpsc_lite.distributed`).
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import nn

from . import CpscError, engine
from .config import DistillConfig
from .data import ArrayDataset, with_normalization
from .distributed import DistContext, per_rank_batch
from .engine import Acceleration, autocast, pick_device, seed_everything
from .generator import ConditionalGenerator
from .losses import BNStatsLoss, Float32BNStatsLoss
from .methods import build_method, family_of
from .models import create_model, feature_dim
from .results import SessionLog
from .utils import warmup_cosine


def lr_factor(cfg: DistillConfig, iteration: int, warmup: int) -> float:
    """The learning rate's multiplier at ``iteration``: the schedule after ``warmup`` linear steps."""
    optim = cfg.optim
    if optim.lr_schedule == "cosine":
        return warmup_cosine(iteration, cfg.budget.iters, warmup)
    if iteration < warmup:
        return (iteration + 1) / warmup
    if optim.lr_schedule == "step":
        marks = (round(f * cfg.budget.iters) for f in optim.lr_steps)
        return 0.1 ** sum(iteration >= mark for mark in marks)
    return 1.0


class Distiller:
    """Teacher, student, generator and projection, their optimisers and schedules, how they run, and
    one iteration of the method (:meth:`iterate`); :func:`cpsc_lite.runner.train` runs iterations
    and writes the run (:func:`build_distiller` makes one from a teacher and a data set)."""

    def __init__(
        self,
        teacher: nn.Module,
        teacher_meta: dict,
        cfg: DistillConfig,
        test_set=None,
        train_set=None,
        augment=(0, False),
        accel: Optional[Acceleration] = None,
        dist: Optional[DistContext] = None,
    ):
        self.cfg, self.teacher_meta = cfg, teacher_meta
        self.accel, self.dist = accel or Acceleration(), dist or DistContext()
        self.device = self.dist.device if self.dist.enabled else pick_device(cfg.device)
        self.batch_size = per_rank_batch(cfg.budget.batch_size, self.dist.world_size)
        self.num_classes = teacher_meta["num_classes"]
        self.channels = teacher_meta["channels"]
        self.img_size = teacher_meta["img_size"]
        self.teacher = teacher.to(self.device).eval().requires_grad_(False)  # frozen
        nets = build_networks(cfg, self.teacher, teacher_meta, self.accel, self.dist)
        self.student, self.generator, self.projection = nets[:3]
        self.teacher_dim, self.channels_last, self.sync_bn = nets[3:]
        mean, std = teacher_meta["mean"], teacher_meta["std"]
        self.train_set = (
            None if train_set is None else with_normalization(train_set, mean, std)
        )
        if isinstance(self.train_set, ArrayDataset) and self.device.type == "cuda":
            self.train_set = self.train_set.to(self.device)  # batches drawn on the GPU
        self.test_set = (
            None if test_set is None else with_normalization(test_set, mean, std)
        )
        self.augment = augment
        self.iteration, self.elapsed = 0, 0.0
        self.method = build_method(self)
        self.amp_dtype = engine.resolve_amp(self.accel.amp, self.device)
        fused = engine.fused_optimizer_kwargs(self.device, self.amp_dtype)
        self.opt_g, self.opt_s, self.sched_g, self.sched_s = build_optimisers(
            cfg, [*self.generator.parameters(), *self.projection.parameters()],
            self.student.parameters(), fused,
        )  # fmt: skip
        self.bn_loss = None
        if family_of(cfg.method).uses_bn_prior(cfg):
            kind = BNStatsLoss if self.amp_dtype is None else Float32BNStatsLoss
            self.bn_loss = kind(self.teacher)
            self.bn_loss.enabled = False  # recording only inside synthesis steps
        self._real_feats = None
        #: the last and the best test accuracy, and (iteration, accuracy) at every evaluation
        self.last_student_acc: Optional[float] = None
        self.best_student_acc: Optional[float] = None
        self.acc_history: list[list] = []
        #: Fingerprints of the teacher and the evaluation data (a resume checks them).
        self.inputs: dict = {}
        #: Provenance: one entry per start or resume (command, hardware, versions, times).
        self.sessions = SessionLog()
        #: Tests may set ``input_sampler(batch_size) -> (x, y)`` to feed the student step fixed inputs.
        self.input_sampler: Optional[Callable[[int], tuple]] = None
        self._setup_execution()

    def _setup_execution(self) -> None:
        """GradScalers (fp16), DDP wrappers and torch.compile. ``teacher``, ``student`` and
        ``generator`` stay the plain modules (what checkpoints, evaluation and the book use)."""
        engine.configure_backends(self.device)
        self.scaler_g = engine.grad_scaler(self.device, self.amp_dtype)
        self.scaler_s = engine.grad_scaler(self.device, self.amp_dtype)
        student_train, generator_train = self.student, self.generator
        if self.dist.enabled:
            nets = (self.student, self.generator)
            student_train, generator_train = engine.data_parallel(nets, self.device)
            self.dist.broadcast_module(
                self.projection
            )  # not wrapped: rank 0's copy too
        wrap = engine.compiler(self.accel)
        self._teacher_net = wrap(self.teacher)
        self._student_net = wrap(
            self.student
        )  # synthesis: S only passes gradients to x
        self._generator_net = wrap(
            self.generator
        )  # student step: images without gradients
        same_s, same_g = (
            student_train is self.student,
            generator_train is self.generator,
        )
        self._student_train = self._student_net if same_s else wrap(student_train)
        self._generator_train = self._generator_net if same_g else wrap(generator_train)

    def runtime(self) -> dict:
        """How this run executes (recorded in metrics.json): precision, layout, compile, processes."""
        amp = str(self.amp_dtype).replace("torch.", "") if self.amp_dtype else "off"
        return dict(
            device=str(self.device),
            amp=amp,
            channels_last=self.channels_last,
            compile=self.accel.compile or "off",
            world_size=self.dist.world_size,
            batch_per_rank=self.batch_size,
            sync_bn=self.sync_bn,
        )

    # ------------------------------------------------- what methods use (methods.base.Run)
    def teacher_forward(self, x, features: bool = False, bn: bool = False):
        """The teacher's logits (and features); with ``bn`` its BN statistics are recorded."""
        if self.bn_loss is not None:
            self.bn_loss.enabled = bn
        return self._teacher_net(x, return_features=features)

    def bn_prior(self) -> torch.Tensor:
        """The BN-statistics prior of the last recorded teacher pass, reduced over the layers."""
        o = self.cfg.objective
        return self.bn_loss.loss(o.bn_reduce, o.bn_first_weight)

    def student_forward(self, x, features: bool = False):
        return self._student_net(x, return_features=features)

    def generate(self, z, y, train: bool = True):
        x = (self._generator_train if train else self._generator_net)(z, y)
        return (
            x.contiguous(memory_format=torch.channels_last) if self.channels_last else x
        )

    def autocast(self):
        """Mixed precision for the forward passes, when on (a no-op in float32)."""
        return autocast(self.device, self.amp_dtype)

    def update(self, optimizer, scaler, loss, unwrapped_params=(), also=()) -> None:
        """One optimiser update of ``optimizer`` and those in ``also``; gradients of
        ``unwrapped_params`` (outside DDP) are averaged over processes before the step."""
        average = lambda: self.dist.average_gradients(unwrapped_params)  # noqa: E731
        engine.update((optimizer, *also), loss, scaler, before_step=average)

    def step_schedule(self, scheduler) -> None:
        engine.step_scheduler(scheduler, self.scaler_g)

    # ------------------------------------------------------------------ one iteration
    def student_inputs(self, batch_size: int):
        """A batch for the student step and its labels (the method's, or a test's fixed inputs)."""
        if self.input_sampler is not None:
            return self.input_sampler(batch_size)
        return self.method.student_batch(batch_size)

    def student_step(self) -> dict:
        """One update of S on a fresh batch; returns the loss terms."""
        x, y = self.student_inputs(self.batch_size)
        with self.autocast():
            with torch.no_grad():
                t_logits, t_feat = self.teacher_forward(x, features=True)
            s_logits, s_feat = self._student_train(x, return_features=True)
        # every loss in float32 (no-ops in float32)
        loss, terms = self.method.student_objective(
            t_logits.float(), s_logits.float(), y, t_feat.float(), s_feat.float()
        )
        self.update(self.opt_s, self.scaler_s, loss)
        return {k: v.detach() for k, v in terms.items()}

    def iterate(self) -> dict:
        """One full iteration: the method's synthesis, then ``s_steps`` student updates."""
        out: dict = {}
        if (
            self.cfg.budget.student_first
        ):  # DFAD's order: the student learns, then the attack
            self._student_steps(out)
        out.update({"g/" + k: v for k, v in self.method.synthesise().items()})
        self.generator.train()
        if not self.cfg.budget.student_first:
            self._student_steps(out)
        self.step_schedule(self.sched_s)
        self.iteration += 1
        return out

    def _student_steps(self, out: dict) -> None:
        n = self.cfg.budget.s_steps
        for _ in range(n):
            for k, v in self.student_step().items():
                out["s/" + k] = out.get("s/" + k, 0) + v / n

    def diagnostics(self, per_class: int = 32) -> dict:
        """Diversity, class balance, teacher confidence and FID of the student's current inputs."""
        return diagnose(self, per_class)

    # ------------------------------------------------------- checkpointing
    def state_dict(self) -> dict:
        return distiller_state(self)

    def load_state_dict(self, state: dict) -> None:
        load_distiller_state(self, state)

    def sync_buffers(self) -> None:
        """Give every rank rank 0's BN running statistics (each rank updates its own)."""
        self.dist.broadcast_module(self.student, buffers_only=True)
        self.dist.broadcast_module(self.generator, buffers_only=True)

    def close(self) -> None:
        if self.bn_loss is not None:
            self.bn_loss.remove()
        self.method.close()


#: Fractions of the budget at which the student is always evaluated (time to accuracy, chapter 7).
BUDGET_FRACTIONS = (0.25, 0.5, 1.0)


def budget_marks(cfg: DistillConfig) -> dict:
    """The iteration at each of :data:`BUDGET_FRACTIONS` of the budget (evaluated whatever
    ``eval_every`` is)."""
    return {f: max(1, round(f * cfg.budget.iters)) for f in BUDGET_FRACTIONS}


def time_to_accuracy(d: Distiller) -> dict:
    """``{"0.25": acc, "0.5": acc, "1.0": acc}``: test accuracy at those fractions of the budget
    (None where the run has not got there or did not evaluate)."""
    found = dict((it, acc) for it, acc in d.acc_history)
    return {str(f): found.get(mark) for f, mark in budget_marks(d.cfg).items()}


def build_networks(cfg, teacher, meta: dict, accel, dist) -> tuple:
    """The student, the generator and the projection for ``cfg``, on the teacher's device, in
    channels-last (the teacher too) and SyncBatchNorm where ``accel`` says so. Returns them, the
    teacher's feature size, and whether channels-last and SyncBatchNorm are on.

    The contrast compares teacher and student features; if their sizes differ, the projection (a
    linear map trained with the generator) brings the student's to the teacher's size."""
    k, c, size = meta["num_classes"], meta["channels"], meta["img_size"]
    device = next(teacher.parameters()).device
    student = create_model(cfg.student, k, c, size).to(device)
    g = cfg.generator
    generator = ConditionalGenerator(
        k, size, c, nz=g.nz, ngf=g.ngf, conditional=g.conditional
    ).to(device)
    channels_last = accel.use_channels_last(device)
    if channels_last:
        for net in (teacher, student, generator):
            net.to(memory_format=torch.channels_last)
    sync_bn = accel.sync_bn and dist.enabled
    if sync_bn and device.type != "cuda":
        raise CpscError(
            "--sync-bn needs CUDA (SyncBatchNorm has no CPU implementation); drop --sync-bn."
        )
    if sync_bn:
        student = nn.SyncBatchNorm.convert_sync_batchnorm(student)
        generator = nn.SyncBatchNorm.convert_sync_batchnorm(generator)
    dim_t, dim_s = feature_dim(teacher, c, size), feature_dim(student, c, size)
    projection = (
        nn.Linear(dim_s, dim_t, bias=False).to(device)
        if dim_s != dim_t
        else nn.Identity()
    )
    return student, generator, projection, dim_t, channels_last, sync_bn


def build_optimisers(cfg, g_params, s_params, fused: dict) -> tuple:
    """The generator's Adam (its parameters and the projection's), the student's SGD or Adam, and
    their learning-rate schedules: ``(opt_g, opt_s, sched_g, sched_s)``."""
    o = cfg.optim
    opt_g = torch.optim.Adam(
        g_params, lr=o.lr_generator, betas=tuple(o.generator_betas), **fused
    )
    student = dict(lr=o.lr_student, weight_decay=o.weight_decay, **fused)
    if o.student_optimizer == "adam":
        opt_s = torch.optim.Adam(s_params, **student)
    else:
        opt_s = torch.optim.SGD(s_params, momentum=o.momentum, **student)
    warmup = int(o.warmup_frac * cfg.budget.iters)
    sched_s = torch.optim.lr_scheduler.LambdaLR(
        opt_s, lambda it: lr_factor(cfg, it, warmup)
    )
    cosine = o.generator_cosine
    g_factor = (lambda it: lr_factor(cfg, it, 0)) if cosine else (lambda it: 1.0)
    return opt_g, opt_s, torch.optim.lr_scheduler.LambdaLR(opt_g, g_factor), sched_s


@torch.no_grad()
def diagnose(d: Distiller, per_class: int = 32) -> dict:
    """Diversity, class balance, teacher confidence and FID of ``d``'s synthetic images (or, for a
    method without them, of the student's inputs). Leaves every random stream as it was."""
    from .diagnostics import real_features, synthetic_diagnostics

    if d.bn_loss is not None:
        d.bn_loss.enabled = False
    if d.test_set is not None and d._real_feats is None:
        d._real_feats = real_features(d.teacher, d.test_set, d.device)
    devices = [d.device.index or 0] if d.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        drawn = d.method.diagnostic_inputs(per_class)
        if drawn is None:
            torch.manual_seed(1234)
            drawn = (d.student_inputs(per_class * d.num_classes)[0], None)
    x, cond = drawn
    return synthetic_diagnostics(d.teacher, x, cond, d.num_classes, d._real_feats)


def build_distiller(
    teacher: nn.Module,
    meta: dict,
    cfg: DistillConfig,
    bundle=None,
    *,
    evaluate: bool = True,
    accel: Optional[Acceleration] = None,
    dist: Optional[DistContext] = None,
) -> Distiller:
    """A :class:`Distiller` for ``cfg`` with the random state seeded (``cfg.seed``, plus the rank with
    several processes): the data set's test split to evaluate on (unless ``evaluate`` is False),
    its training split only for a method that reads it, and its augmentation."""
    dist = dist or DistContext()
    seed_everything(cfg.seed + dist.rank)
    reads = family_of(cfg.method).reads_training_data
    return Distiller(
        teacher,
        meta,
        cfg,
        test_set=bundle.test if bundle is not None and evaluate else None,
        train_set=bundle.train if bundle is not None and reads else None,
        augment=(bundle.augment_pad, bundle.augment_flip) if bundle else (0, False),
        accel=accel,
        dist=dist,
    )


# ------------------------------------------------------------------ persistence
def distiller_state(d: Distiller) -> dict:
    """Everything needed to continue ``d`` exactly (state.pt's ``state``): networks, optimisers,
    schedules, random state, accuracy history, sessions, and what the method keeps (pools, heads)."""
    state = dict(
        iteration=d.iteration,
        elapsed=d.elapsed,
        config=d.cfg.to_dict(),
        student=d.student.state_dict(),
        generator=d.generator.state_dict(),
        projection=d.projection.state_dict(),
        opt_g=d.opt_g.state_dict(),
        opt_s=d.opt_s.state_dict(),
        sched_s=d.sched_s.state_dict(),
        sched_g=d.sched_g.state_dict(),
        rng=engine.rng_state(d.device),
        last_student_acc=d.last_student_acc,
        best_student_acc=d.best_student_acc,
        acc_history=[list(h) for h in d.acc_history],
        sessions=d.sessions.sessions,
        inputs=dict(d.inputs),
        amp=d.runtime()["amp"],
        **d.method.state_dict(),
    )
    if d.scaler_g is not None:
        state.update(scaler_g=d.scaler_g.state_dict(), scaler_s=d.scaler_s.state_dict())
    return state


def load_distiller_state(d: Distiller, state: dict) -> None:
    """Continue ``d`` from :func:`distiller_state` (also from the layouts of older versions)."""
    for name in ("student", "generator", "projection", "opt_g", "opt_s"):
        getattr(d, name).load_state_dict(state[name])
    d.sched_s.load_state_dict(state["sched_s"])
    d.sched_g.load_state_dict(state["sched_g"])
    if d.scaler_g is not None and "scaler_g" in state:
        d.scaler_g.load_state_dict(state["scaler_g"])
        d.scaler_s.load_state_dict(state["scaler_s"])
    d.iteration, d.elapsed = state["iteration"], state["elapsed"]
    d.inputs = dict(state.get("inputs") or {})
    d.method.load_state_dict(state)
    d.last_student_acc = state.get("last_student_acc")
    d.best_student_acc = state.get("best_student_acc", d.last_student_acc)
    d.acc_history = [list(h) for h in state.get("acc_history", [])]
    d.sessions = SessionLog(state.get("sessions"))
    # this rank's random state: its own when the run had as many ranks, else a fresh stream
    per_rank = state.get("rng_per_rank")
    if per_rank is not None and len(per_rank) == d.dist.world_size:
        engine.set_rng_state(per_rank[d.dist.rank], d.device)
    elif d.dist.is_main:
        engine.set_rng_state(state["rng"], d.device)
    else:  # resumed with more processes than the run had: a distinct stream per rank
        seed_everything(d.cfg.seed + d.dist.rank + 1_000_003 * d.iteration)


def student_meta(d: Distiller) -> dict:
    """student.pt's metadata: the teacher's data facts, the student's model and method."""
    dropped = ("test_acc", "train_config", "version", "source_file")
    meta = {k: v for k, v in d.teacher_meta.items() if k not in dropped}
    return dict(meta, model=d.cfg.student, method=d.cfg.method, iteration=d.iteration)


def generator_meta(d: Distiller) -> dict:
    """generator.pt's metadata: how to rebuild it and show its images."""
    meta = d.teacher_meta
    return dict(
        generator=d.generator.config(),
        class_names=list(meta["class_names"]),
        mean=list(meta["mean"]),
        std=list(meta["std"]),
        dataset=meta.get("dataset"),
        method=d.cfg.method,
        iteration=d.iteration,
    )
