"""The CPSC-DFKD loop (book chapter 6).

One *iteration* is ``g_steps`` generator updates followed by ``s_steps``
student updates, each on a fresh batch x = G(z, y) with z ~ N(0, I) and
y ~ Uniform{0..K-1}. With t = T(x), s = S(x):

    generator:  L_G = -KL(t, s) - alpha * IKD + beta * L_BN + gamma * L_SCL + eta * CE(t, y)
    student:    L_S =  KL(t, s) + alpha * IKD + eta * CE(s, y)

Each term has a switch in :class:`~cpsc_lite.config.DistillConfig`. The teacher
never changes; real images are read only to *evaluate* the student.

On a GPU the same loop runs faster without changing the method
(:mod:`cpsc_lite.engine`, book chapter 8): mixed precision (losses stay in
float32), channels-last layouts, fused optimisers, optional ``torch.compile``, and several GPUs
with DistributedDataParallel (:mod:`cpsc_lite.distributed`). On CPU only the channels-last
layout is on by default (the numbers differ from the plain layout's in float rounding only).
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch
from torch import nn
import torch.nn.functional as F

from . import CpscError
from .config import DistillConfig
from .data import ArrayDataset, with_normalization
from .distributed import DistContext, per_rank_batch
from .generator import (
    ClassConditionalBatchNorm2d,
    ConditionalGenerator,
    generate_per_class,
)
from .losses import (
    BNInputMeans,
    BNStatsLoss,
    agreeing_kl,
    competition,
    ikd_loss,
    instance_contrast,
    kl_divergence,
    mode_seeking,
    pseudo_ce,
    supcon_loss,
    total_variation,
)
from .models import create_model, feature_dim
from .results import SessionLog
from . import engine
from .engine import (
    Acceleration,
    autocast,
    configure_backends,
    fused_optimizer_kwargs,
    grad_scaler,
    pick_device,
    resolve_amp,
    rng_state,
    seed_everything,
    set_rng_state,
)
from .utils import augment_batch, warmup_cosine


class _Float32BNStatsLoss(BNStatsLoss):
    """BN-statistics prior with the batch mean and variance taken in float32 under autocast.

    (A bf16 mean carries 8 bits of mantissa: too coarse for a loss that matches statistics.)
    """

    def _hook(self, module, inputs, output) -> None:
        super()._hook(module, (inputs[0].float(),), output)


def lr_factor(cfg: DistillConfig, iteration: int, warmup: int) -> float:
    """The learning rate's multiplier at ``iteration``: ``cfg.lr_schedule`` after ``warmup`` linear steps."""
    if cfg.lr_schedule == "cosine":
        return warmup_cosine(iteration, cfg.iters, warmup)
    if iteration < warmup:
        return (iteration + 1) / warmup
    if cfg.lr_schedule == "step":
        return 0.1 ** sum(iteration >= round(f * cfg.iters) for f in cfg.lr_steps)
    return 1.0


# ---------------------------------------------------------------- the method
def kd_distance(
    t_logits: torch.Tensor, s_logits: torch.Tensor, cfg: DistillConfig
) -> torch.Tensor:
    """The distillation distance: KL(softmax(t) || softmax(s)) (CPSC), or DFAD's ``mean |t - s|``."""
    if cfg.kd_loss == "l1":
        return (s_logits - t_logits).abs().mean()
    return kl_divergence(t_logits, s_logits, cfg.kd_temperature)


def contrast(
    t_feat: torch.Tensor, s_feat: torch.Tensor, labels: torch.Tensor, temperature: float
) -> torch.Tensor:
    """L_SCL: SupCon over the teacher's and the student's L2-normalised view of each image (chapter 5).

    ``s_feat`` must already have the teacher's feature size (the Distiller's projection does that)."""
    views = torch.stack([F.normalize(t_feat, dim=1), F.normalize(s_feat, dim=1)], dim=1)
    return supcon_loss(views, labels, temperature)


def generator_loss(
    t_logits: torch.Tensor,
    labels: torch.Tensor,
    cfg: DistillConfig,
    *,
    s_logits: Optional[torch.Tensor] = None,
    t_feat: Optional[torch.Tensor] = None,
    s_feat: Optional[torch.Tensor] = None,
    bn: Optional[torch.Tensor] = None,
    images: Optional[torch.Tensor] = None,
    noise: Optional[torch.Tensor] = None,
    adversarial: bool = True,
) -> tuple[torch.Tensor, dict]:
    """The generator's objective L_G for one batch x = G(z, y) (paper Sec. 3; book chapter 6):

        L_G = -KL(t, s) - alpha * IKD(sg(t), s) + beta * L_BN + gamma * L_SCL(t, s; y) + eta * CE(t, y)

    with t = T(x), s = S(x), sg = stop-gradient, and IKD = MSE(s, sg(t)) (``cfg.ikd_log``: its log,
    a bounded push). Every term has its switch in ``cfg``; ``adversarial=False`` drops the first
    two (the warm-up). Optional extras, all off by default: DeepInversion's image priors
    (``prior_tv``, ``prior_l2`` on ``images``) and its ADI competition term (``adi_weight``, needs
    ``s_logits``), MSGAN's mode-seeking term (``diversity``, on ``images`` and their ``noise``, whose
    two halves share their labels), and DAFL's three generator losses (the ``dafl`` baseline). The ``deepinv``
    baseline minimises this same objective over the pixels of a batch instead of G's weights.
    ``labels`` are the pseudo labels (the conditioning y), ``bn`` the BN-statistics
    term already reduced over the teacher's layers, ``s_feat`` the student's features projected to
    the teacher's size. Returns the total and a dict of the terms (the unweighted values).
    """
    terms: dict[str, torch.Tensor] = {}
    loss = t_logits.new_zeros(())
    if adversarial and cfg.use_adv:
        terms["adv_kd"] = kd_distance(t_logits, s_logits, cfg)
        loss = loss - terms["adv_kd"]
        if cfg.use_ikd:
            # G moves S towards errors, not T's scale
            terms["adv_ikd"] = ikd_loss(t_logits.detach(), s_logits)
            loss = loss - cfg.alpha * (
                torch.log(terms["adv_ikd"] + 1e-8) if cfg.ikd_log else terms["adv_ikd"]
            )
    if cfg.use_bn:
        terms["bn"] = bn
        loss = loss + cfg.beta * bn
    if cfg.use_scl:
        terms["scl"] = contrast(t_feat, s_feat, labels, cfg.temperature)
        loss = loss + cfg.gamma * terms["scl"]
    if cfg.teacher_ce:
        terms["ce_teacher"] = pseudo_ce(t_logits, labels, cfg.ce_on_softmax)
        loss = loss + cfg.eta * terms["ce_teacher"]
    if cfg.prior_tv:
        terms["prior_tv"] = total_variation(images)
        loss = loss + cfg.prior_tv * terms["prior_tv"]
    if cfg.prior_l2:
        terms["prior_l2"] = images.pow(2).mean()
        loss = loss + cfg.prior_l2 * terms["prior_l2"]
    if cfg.diversity:
        terms["diversity"] = mode_seeking(images, noise)
        loss = loss + cfg.diversity * terms["diversity"]
    if cfg.use_dafl:
        # DAFL: confident one-hot predictions, large feature activations, balanced classes.
        terms["onehot"] = F.cross_entropy(t_logits, t_logits.detach().argmax(1))
        terms["activation"] = -t_feat.abs().mean()
        p_mean = t_logits.softmax(1).mean(0)
        log = torch.log10 if cfg.dafl_log10 else torch.log
        terms["info_entropy"] = (
            p_mean * log(p_mean + 1e-8)
        ).sum()  # = -H(mean prediction)
        loss = (
            loss
            + cfg.dafl_onehot * terms["onehot"]
            + cfg.dafl_activation * terms["activation"]
            + cfg.dafl_entropy * terms["info_entropy"]
        )
    if cfg.adi_weight:
        terms["competition"] = competition(t_logits, s_logits)
        loss = loss + cfg.adi_weight * terms["competition"]
    terms["total"] = loss
    return loss, terms


def student_loss(
    t_logits: torch.Tensor,
    s_logits: torch.Tensor,
    cfg: DistillConfig,
    *,
    labels: Optional[torch.Tensor] = None,
    t_feat: Optional[torch.Tensor] = None,
    s_feat: Optional[torch.Tensor] = None,
) -> tuple[torch.Tensor, dict]:
    """The student's objective L_S for one batch (paper Sec. 3; book chapter 6):

        L_S = KL(t, s) + alpha * IKD(t, s) + eta * CE(s, y)  [+ gamma * L_SCL if ``student_scl``]

    with IKD = MSE(s, t) (``cfg.ikd_student_log``: log ||t - s||_2 over the whole logit matrix, the
    authors' CIFAR-10 form). The CE term needs ``cfg.student_ce`` and pseudo ``labels`` (None for
    inputs without a conditioning label: noise, real data). Returns the total and the terms.
    """
    terms = {"kd": kd_distance(t_logits, s_logits, cfg)}
    loss = terms["kd"]
    if cfg.use_ikd:
        terms["ikd"] = (
            torch.log(torch.norm(t_logits - s_logits, 2) + 1e-8)
            if cfg.ikd_student_log
            else ikd_loss(t_logits, s_logits)
        )
        loss = loss + cfg.alpha * terms["ikd"]
    if labels is not None:
        if cfg.student_ce:
            terms["ce_student"] = pseudo_ce(s_logits, labels, cfg.ce_on_softmax)
            loss = loss + cfg.eta * terms["ce_student"]
        if cfg.use_scl and cfg.student_scl:
            terms["scl_student"] = contrast(t_feat, s_feat, labels, cfg.temperature)
            loss = loss + cfg.gamma * terms["scl_student"]
    terms["total"] = loss
    return loss, terms


def effective_ikd_forms(cfg: DistillConfig, dataset: Optional[str]) -> DistillConfig:
    """``ikd_authors_form``: the authors' code uses -log MSE / log ||t - s||_2 on CIFAR-10 only,
    plain -MSE / MSE on every other data set; this returns ``cfg`` with those two switches set."""
    if not cfg.ikd_authors_form:
        return cfg
    cifar10 = (dataset or "").lower() in ("cifar10", "cifar-10")
    return cfg.replace(ikd_log=cifar10, ikd_student_log=cifar10)


def augment_views(x: torch.Tensor, jitter: int, flip: bool) -> torch.Tensor:
    """DeepInversion's augmentation of generated images: one random shift (up to ``jitter`` pixels,
    wrapping around) and a random horizontal flip for the whole batch; identity when both are off."""
    if jitter:
        dx, dy = (int(v) for v in torch.randint(-jitter, jitter + 1, (2,)))
        x = torch.roll(x, shifts=(dx, dy), dims=(2, 3))
    if flip and bool(torch.rand(()) < 0.5):
        x = torch.flip(x, dims=(3,))
    return x


def local_views(
    x: torch.Tensor, flip: bool, scale: tuple = (0.25, 1.0)
) -> torch.Tensor:
    """CMI's local views: per image, a random crop of ``scale`` of its area (aspect ratio 3/4 to 4/3)
    resized back to the full size (bilinear), mirrored at random when ``flip``."""
    b, dev = x.shape[0], x.device
    area = torch.empty(b, device=dev).uniform_(*scale)
    ratio = torch.exp(
        torch.empty(b, device=dev).uniform_(math.log(3 / 4), math.log(4 / 3))
    )
    # fractions of a side
    w, h = (
        (area * ratio).sqrt().clamp(max=1.0),
        (area / ratio).sqrt().clamp(max=1.0),
    )
    cx, cy = (
        (torch.rand(b, device=dev) * 2 - 1) * (1 - w),
        (torch.rand(b, device=dev) * 2 - 1) * (1 - h),
    )
    sign = (
        torch.where(torch.rand(b, device=dev) < 0.5, -1.0, 1.0)
        if flip
        else torch.ones(b, device=dev)
    )
    zero = torch.zeros(b, device=dev)
    theta = torch.stack(
        [torch.stack([w * sign, zero, cx], 1), torch.stack([zero, h, cy], 1)], 1
    )
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(
        x, grid, mode="bilinear", padding_mode="reflection", align_corners=False
    )


def reinitialise(generator: nn.Module) -> None:
    """CMI's reset before each batch: conv and linear weights ~ N(0, 0.02), biases 0, batch-norm scales
    ~ N(1, 0.02) and shifts 0 (also the class-conditional ones)."""
    for m in generator.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)) and m.affine:
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
        elif isinstance(m, ClassConditionalBatchNorm2d):
            nn.init.normal_(m.gamma.weight, 1.0, 0.02)
            nn.init.zeros_(m.beta.weight)


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
        images, labels = (
            images.detach()[-self.capacity :],
            labels.detach()[-self.capacity :],
        )
        n = len(images)
        if self.images is None:
            self.images, self.labels = (
                images.new_empty((0,) + images.shape[1:]),
                labels.new_empty(0),
            )
        need = min(self.capacity, self.size + n)
        if need > len(self.images):  # grow by doubling, at most to the capacity
            grow = min(self.capacity, max(2 * len(self.images), need)) - len(
                self.images
            )
            self.images = torch.cat(
                [self.images, images.new_empty((grow,) + images.shape[1:])]
            )
            self.labels = torch.cat([self.labels, labels.new_empty(grow)])
        where = (
            self.next + torch.arange(n, device=images.device)
        ) % self.capacity  # next == size until full
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
        idx = (
            self.next - n + torch.arange(n, device=self.images.device)
        ) % self.capacity
        return self.images[idx], self.labels[idx]

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
            self.images, self.labels = (
                state["images"].to(device),
                state["labels"].to(device),
            )


class Distiller:
    """Teacher, student, generator, projection, their optimisers and schedules, and one iteration of the
    method (:meth:`iterate`); :func:`cpsc_lite.runner.train` runs the iterations and writes the run."""

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
        self.cfg = cfg
        #: what the objectives read: ``cfg`` with the authors' dataset-dependent IKD form resolved
        self.loss_cfg = effective_ikd_forms(cfg, teacher_meta.get("dataset"))
        self.teacher_meta = teacher_meta
        self.accel = accel or Acceleration()
        self.dist = dist or DistContext()
        self.device = self.dist.device if self.dist.enabled else pick_device(cfg.device)
        # this rank's share
        self.batch_size = per_rank_batch(cfg.batch_size, self.dist.world_size)
        k, c, size = (
            teacher_meta["num_classes"],
            teacher_meta["channels"],
            teacher_meta["img_size"],
        )
        self.num_classes, self.channels, self.img_size = k, c, size
        self.teacher = teacher.to(self.device).eval()
        # frozen: no parameter gradients are ever computed
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.student = create_model(cfg.student, k, c, size).to(self.device)
        self.generator = ConditionalGenerator(
            k, size, c, nz=cfg.nz, ngf=cfg.ngf, conditional=cfg.conditional
        ).to(self.device)
        self.channels_last = self.accel.use_channels_last(self.device)
        if self.channels_last:
            for net in (self.teacher, self.student, self.generator):
                net.to(memory_format=torch.channels_last)
        self.sync_bn = (
            self.accel.sync_bn and self.dist.enabled and self.device.type == "cuda"
        )
        if self.accel.sync_bn and self.dist.enabled and not self.sync_bn:
            raise CpscError(
                "--sync-bn needs CUDA (SyncBatchNorm has no CPU implementation); drop --sync-bn."
            )
        if self.sync_bn:
            self.student = nn.SyncBatchNorm.convert_sync_batchnorm(self.student)
            self.generator = nn.SyncBatchNorm.convert_sync_batchnorm(self.generator)
        self.uses_generator = cfg.input_source == "generator"
        # DeepInversion: optimised pixels in a pool
        self.inverts = cfg.input_source == "inversion"
        if self.inverts and not (cfg.teacher_ce or cfg.use_bn):
            raise CpscError(
                "input_source 'inversion' needs an objective for the pixels: turn on teacher_ce or use_bn."
            )
        self.pool = (
            SamplePool(max(1, cfg.pool_batches) * self.batch_size)
            if self.inverts
            else None
        )
        #: Replay: images the student learnt from, drawn again for a share of later student batches
        self.replay_pool = (
            SamplePool(cfg.replay_batches * self.batch_size)
            if self.uses_generator and cfg.replay
            else None
        )
        #: CMI: the generator is re-initialised for every batch (inversion_target="generator")
        self.inverts_generator = self.inverts and cfg.inversion_target == "generator"
        if cfg.input_source == "data" and train_set is None:
            raise CpscError(
                "input_source 'data' (the 'data' baseline) needs the training split; "
                "pass train_set (the dataset has none, or it was not given)."
            )
        self.train_set = (
            with_normalization(train_set, teacher_meta["mean"], teacher_meta["std"])
            if train_set is not None
            else None
        )
        if isinstance(self.train_set, ArrayDataset) and self.device.type == "cuda":
            # the data baseline draws its batches on the GPU: no gather and copy per student step
            self.train_set = self.train_set.to(self.device)
        self.augment = augment
        # The contrast compares teacher and student features; if their sizes differ, a
        # linear map (trained with the generator) brings the student's to the teacher's size.
        dim_t = feature_dim(self.teacher, c, size)
        dim_s = feature_dim(self.student, c, size)
        self.projection = (
            nn.Linear(dim_s, dim_t, bias=False).to(self.device)
            if dim_s != dim_t
            else nn.Identity()
        )
        self.cmi_head = self.cmi_bank = self.opt_head = self.cmi_means = None
        # CMI's projection head and memory bank persist
        if self.inverts_generator and cfg.cmi_weight:
            if cfg.cmi_features == "bn_inputs":
                self.cmi_means = BNInputMeans(self.teacher)
            dim_f = dim_t if self.cmi_means is None else self.cmi_means.dim
            self.cmi_head = nn.Sequential(
                nn.Linear(dim_f, dim_f),
                nn.ReLU(inplace=True),
                nn.Linear(dim_f, cfg.cmi_head_dim),
            ).to(self.device)
            self.opt_head = torch.optim.Adam(
                self.cmi_head.parameters(), lr=cfg.lr_generator
            )
            self.cmi_bank = SamplePool(cfg.cmi_bank)
        g_params = list(self.generator.parameters()) + list(
            self.projection.parameters()
        )
        self.amp_dtype = resolve_amp(self.accel.amp, self.device)
        fused = fused_optimizer_kwargs(self.device, self.amp_dtype)
        self.opt_g = torch.optim.Adam(
            g_params, lr=cfg.lr_generator, betas=tuple(cfg.generator_betas), **fused
        )
        if cfg.student_optimizer == "adam":
            self.opt_s = torch.optim.Adam(
                self.student.parameters(),
                lr=cfg.lr_student,
                weight_decay=cfg.weight_decay,
                **fused,
            )
        else:
            self.opt_s = torch.optim.SGD(
                self.student.parameters(),
                lr=cfg.lr_student,
                momentum=cfg.momentum,
                weight_decay=cfg.weight_decay,
                **fused,
            )
        warmup = int(cfg.warmup_frac * cfg.iters)
        self.sched_s = torch.optim.lr_scheduler.LambdaLR(
            self.opt_s, lambda it: lr_factor(cfg, it, warmup)
        )
        g_factor = (
            (lambda it: lr_factor(cfg, it, 0))
            if cfg.generator_cosine
            else (lambda it: 1.0)
        )
        self.sched_g = torch.optim.lr_scheduler.LambdaLR(self.opt_g, g_factor)
        bn_loss_type = BNStatsLoss if self.amp_dtype is None else _Float32BNStatsLoss
        self.bn_loss = (
            bn_loss_type(self.teacher)
            if cfg.use_bn and (self.uses_generator or self.inverts)
            else None
        )
        # recording only inside generator steps, not in e.g. evaluate(teacher)
        if self.bn_loss is not None:
            self.bn_loss.enabled = False
        self.test_set = (
            with_normalization(test_set, teacher_meta["mean"], teacher_meta["std"])
            if test_set is not None
            else None
        )
        self._real_feats = None
        self.iteration = 0
        self.elapsed = 0.0
        self.last_student_acc: Optional[float] = None
        # best at any evaluation (what DFKD papers report)
        self.best_student_acc: Optional[float] = None
        #: (iteration, test accuracy) at every evaluation: time to accuracy (``accuracy_at``).
        self.acc_history: list[list] = []
        #: Fingerprints of the teacher and the evaluation data (``run_distill`` sets them); a resume checks them.
        self.inputs: dict = {}
        #: Provenance: one entry per start or resume (command, hardware, versions, times).
        self.sessions = SessionLog()
        #: Tests may set ``input_sampler(batch_size) -> (x, y)`` to feed the student step fixed inputs.
        self.input_sampler: Optional[Callable[[int], tuple]] = None
        self._setup_execution()

    def _setup_execution(self) -> None:
        """How the forward passes run: GradScalers (fp16), DDP wrappers, torch.compile.

        ``self.teacher``, ``self.student`` and ``self.generator`` stay the plain modules (they are
        what checkpoints, evaluation and the book use); the steps call the wrapped versions.
        """
        configure_backends(self.device)
        self.scaler_g = grad_scaler(self.device, self.amp_dtype)
        self.scaler_s = grad_scaler(self.device, self.amp_dtype)
        student_train, generator_train = self.student, self.generator
        if self.dist.enabled:
            student_train, generator_train = engine.data_parallel(
                (self.student, self.generator), self.device
            )
            # not wrapped: start from rank 0's copy too
            self.dist.broadcast_module(self.projection)
        wrap = engine.compiler(self.accel)
        self._teacher_net = wrap(self.teacher)
        # generator step: S only passes gradients on to x
        self._student_net = wrap(self.student)
        # student step: images without gradients
        self._generator_net = wrap(self.generator)
        self._student_train = (
            self._student_net if student_train is self.student else wrap(student_train)
        )
        self._generator_train = (
            self._generator_net
            if generator_train is self.generator
            else wrap(generator_train)
        )

    def runtime(self) -> dict:
        """How this run executes (recorded in metrics.json): precision, layout, compile, processes."""
        return dict(
            device=str(self.device),
            amp=str(self.amp_dtype).replace("torch.", "") if self.amp_dtype else "off",
            channels_last=self.channels_last,
            compile=self.accel.compile or "off",
            world_size=self.dist.world_size,
            batch_per_rank=self.batch_size,
            sync_bn=self.sync_bn,
        )

    # ------------------------------------------------------------------ steps
    def _teacher(self, x, features: bool = False, bn: bool = False):
        if self.bn_loss is not None:
            self.bn_loss.enabled = bn
        return self._teacher_net(x, return_features=features)

    def _inversion_loss(self, t_logits, y, s_logits, images):
        """:func:`generator_loss` without the adversarial terms, for a batch being inverted
        (DeepInversion's pixels, CMI's re-initialised generator): CE, BN prior, image priors."""
        cfg = self.cfg
        return generator_loss(
            t_logits.float(),
            y,
            self.loss_cfg,
            s_logits=None if s_logits is None else s_logits.float(),
            bn=self.bn_loss.loss(cfg.bn_reduce, cfg.bn_first_weight)
            if cfg.use_bn
            else None,
            images=images.float() if cfg.prior_tv or cfg.prior_l2 else None,
            adversarial=False,
        )

    def _cmi_teacher(self, x, bn: bool = False):
        """The teacher's logits and CMI's features of ``x``: its penultimate features, or with
        ``cmi_features="bn_inputs"`` the channel means of every BN layer's input."""
        if self.cmi_means is None:
            return self._teacher(x, features=True, bn=bn)
        self.cmi_means.enabled = True
        try:
            logits = self._teacher(x, bn=bn)
        finally:
            self.cmi_means.enabled = False
        return logits, self.cmi_means.collect()

    def _generate(self, z, y, train: bool = True):
        x = (self._generator_train if train else self._generator_net)(z, y)
        return (
            x.contiguous(memory_format=torch.channels_last) if self.channels_last else x
        )

    def _autocast(self):
        """Mixed precision for the forward passes, when on (a no-op in float32)."""
        return autocast(self.device, self.amp_dtype)

    def _schedule(self, scheduler) -> None:
        engine.step_scheduler(scheduler, self.scaler_g)

    def _update(self, optimizer, scaler, loss, unwrapped_params=(), also=()) -> None:
        """One optimiser update (:func:`engine.update`) of ``optimizer`` and those in ``also``; gradients of
        ``unwrapped_params`` (outside DDP) are averaged over processes before the step."""
        engine.update(
            (optimizer, *also),
            loss,
            scaler,
            before_step=lambda: self.dist.average_gradients(unwrapped_params),
        )

    def _pseudo_labels(self, y, t_logits):
        """The conditioning label; an unconditional generator's images get the teacher's argmax instead."""
        return y if self.cfg.conditional else t_logits.detach().argmax(1)

    def generator_step(self) -> dict:
        """One update of G (and the projection) on a fresh batch; returns the loss terms."""
        cfg = self.cfg
        self.generator.train()
        self.student.requires_grad_(False)
        z, y = self.generator.sample_inputs(self.batch_size, self.device)
        if cfg.diversity:
            # mode seeking compares two images of one label: pair the halves
            h = len(y) // 2
            y = torch.cat([y[:h], y[:h], y[2 * h :]])
        s_logits = s_feat = None
        with self._autocast():
            x = self._generate(z, y)
            x_in = augment_views(x, cfg.jitter, cfg.flip)
            t_logits, t_feat = self._teacher(x_in, features=True, bn=cfg.use_bn)
            if cfg.use_adv or cfg.use_scl:
                s_logits, s_feat = self._student_net(x_in, return_features=True)
        # every loss in float32 (no-ops in float32)
        t_logits, t_feat = (
            t_logits.float(),
            t_feat.float(),
        )
        if s_logits is not None:
            s_logits, s_feat = s_logits.float(), s_feat.float()
        loss, terms = generator_loss(
            t_logits,
            self._pseudo_labels(y, t_logits),
            self.loss_cfg,
            s_logits=s_logits,
            t_feat=t_feat,
            s_feat=self.projection(s_feat) if cfg.use_scl else None,
            bn=self.bn_loss.loss(cfg.bn_reduce, cfg.bn_first_weight)
            if cfg.use_bn
            else None,
            images=x.float() if cfg.prior_tv or cfg.prior_l2 or cfg.diversity else None,
            noise=z,
            adversarial=self.adversarial_on(),
        )
        # the authors' code builds a new Adam for every generator step
        if cfg.generator_adam_reset:
            self.opt_g.state.clear()
            for group in self.opt_g.param_groups:
                group["lr"] = cfg.lr_generator
        self._update(
            self.opt_g,
            self.scaler_g,
            loss,
            unwrapped_params=self.projection.parameters(),
        )
        self.student.requires_grad_(True)
        return {k: v.detach() for k, v in terms.items()}

    def inversion_step(self) -> dict:
        """DeepInversion (Yin et al. 2020): optimise one fresh batch of pixels, x ~ N(0, I), for
        ``inversion_steps`` Adam steps on :func:`generator_loss` (CE to the target labels, BN prior,
        image priors on jittered/flipped views, ADI competition with the student if ``adi_weight``),
        then add it to the pool. The published code keeps the *last* images (its "best" copy
        shares the optimised tensor's storage), and so does this one."""
        cfg = self.cfg
        if self.inverts_generator:
            return self.generator_inversion_step()
        # every class, in columns
        y = torch.arange(self.batch_size, device=self.device) % self.num_classes
        x = torch.randn(
            self.batch_size,
            self.channels,
            self.img_size,
            self.img_size,
            device=self.device,
        )
        x.requires_grad_(True)
        optimizer = torch.optim.Adam([x], lr=cfg.inversion_lr)
        scaler = grad_scaler(self.device, self.amp_dtype)
        self.student.requires_grad_(False)
        self.student.eval()  # as published: the student only judges, in eval mode
        terms: dict = {}
        for _ in range(cfg.inversion_steps):
            with self._autocast():
                x_in = augment_views(x, cfg.jitter, cfg.flip)
                t_logits = self._teacher(x_in, bn=cfg.use_bn)
                s_logits = self._student_net(x_in) if cfg.adi_weight else None
            loss, terms = self._inversion_loss(t_logits, y, s_logits, x_in)
            # each rank's pixels are its own: nothing to average
            self._update(optimizer, scaler, loss)
        self.student.requires_grad_(True)
        self.student.train()
        self.pool.add(x.detach(), y)
        return {k: v.detach() for k, v in terms.items()}

    def generator_inversion_step(self) -> dict:
        """CMI (Fang et al. 2021): re-initialise the generator, draw learnable inputs z and sorted random
        target labels, and optimise both for ``inversion_steps`` Adam steps on :func:`generator_loss`
        (CE to the targets, BN prior) minus ``cmi_adv`` x :func:`agreeing_kl` plus ``cmi_weight`` x
        :func:`instance_contrast` of local against global views (the head and the memory bank
        persist across batches). The lowest-loss images go to the pool, their features to the bank."""
        cfg = self.cfg
        b = self.batch_size
        y = torch.randint(0, self.num_classes, (b,), device=self.device).sort().values
        reinitialise(self.generator)
        self.generator.train()
        z = torch.randn(b, self.generator.nz, device=self.device, requires_grad=True)
        optimizer = torch.optim.Adam(
            [{"params": list(self.generator.parameters())}, {"params": [z]}],
            lr=cfg.lr_generator,
            betas=tuple(cfg.generator_betas),
        )
        scaler = grad_scaler(self.device, self.amp_dtype)
        also = (self.opt_head,) if self.cmi_head is not None else ()
        self.student.requires_grad_(False)
        self.student.eval()
        best_loss, best, terms = float("inf"), None, {}
        for _ in range(cfg.inversion_steps):
            with self._autocast():
                x = self._generate(z, y)
                x_global = augment_views(x, cfg.jitter, cfg.flip)
                t_logits, t_feat = self._cmi_teacher(x_global, bn=cfg.use_bn)
                s_logits = (
                    self._student_net(x_global)
                    if cfg.cmi_adv or cfg.adi_weight
                    else None
                )
                local_feat = (
                    self._cmi_teacher(local_views(x, cfg.flip))[1]
                    if self.cmi_head
                    else None
                )
            loss, terms = self._inversion_loss(t_logits, y, s_logits, x_global)
            if cfg.cmi_adv:
                terms["cmi_adv"] = agreeing_kl(t_logits.float(), s_logits.float())
                loss = loss - cfg.cmi_adv * terms["cmi_adv"]
            if self.cmi_head is not None:
                # (b, 2 views, d)
                feats = torch.stack([local_feat.float(), t_feat.float()], 1)
                if self.cmi_bank.size and cfg.cmi_negatives:
                    feats = torch.cat(
                        [
                            feats,
                            self.cmi_bank.sample(
                                min(cfg.cmi_negatives, self.cmi_bank.size)
                            )[0],
                        ]
                    )
                proj = F.normalize(self.cmi_head(feats.flatten(0, 1)), dim=1).view(
                    len(feats), 2, -1
                )
                terms["cmi_contrast"] = instance_contrast(
                    proj[:, 0], proj[:, 1], cfg.cmi_temperature, b
                )
                loss = loss + cfg.cmi_weight * terms["cmi_contrast"]
                feats_now = torch.stack([local_feat, t_feat], 1).detach().float()
            terms["total"] = loss
            # one host sync per step, as in the published code (it keeps the best)
            value = float(loss.detach())
            if value < best_loss:
                best_loss = value
                best = (
                    x.detach().float().clone(),
                    feats_now if self.cmi_head is not None else None,
                )
            # each rank's batch is its own
            self._update(optimizer, scaler, loss, also=also)
        self.student.requires_grad_(True)
        self.student.train()
        self.pool.add(best[0], y)
        if self.cmi_head is not None:
            self.cmi_bank.add(best[1], y)
        return {k: v.detach() for k, v in terms.items()}

    def adversarial_on(self) -> bool:
        """Whether G maximises the disagreement now (off during the first ``adv_warmup`` of the run)."""
        return self.cfg.use_adv and self.iteration >= int(
            self.cfg.adv_warmup * self.cfg.iters
        )

    def student_inputs(self, batch_size: int):
        """A batch for the student step: generated (no gradient to G), Gaussian noise, or real images."""
        if self.input_sampler is not None:
            return self.input_sampler(batch_size)
        if self.inverts:
            return self.pool.sample(batch_size)
        if self.cfg.input_source == "noise":
            x = torch.randn(
                batch_size,
                self.channels,
                self.img_size,
                self.img_size,
                device=self.device,
            )
            return x, None
        if self.cfg.input_source == "data":
            on = getattr(self.train_set, "device", torch.device("cpu"))
            idx = torch.randint(0, len(self.train_set), (batch_size,), device=on)
            x, y = (
                self.train_set.batch(idx)
                if hasattr(self.train_set, "batch")
                else tuple(
                    torch.utils.data.default_collate(
                        [self.train_set[int(i)] for i in idx]
                    )
                )
            )
            return augment_batch(x.to(self.device), *self.augment), y.to(self.device)
        if self.replay_pool is None:
            return self._fresh(batch_size)
        old = round(self.cfg.replay * batch_size) if self.replay_pool.size else 0
        x, y = self._fresh(batch_size - old)
        if old:
            x_old, y_old = self.replay_pool.sample(old)
            self.replay_pool.add(x, y)
            return torch.cat([x, x_old.to(x.dtype)]), torch.cat([y, y_old])
        self.replay_pool.add(x, y)
        return x, y

    def _fresh(self, batch_size: int):
        """A batch of generated images (no gradient to G) and their labels."""
        z, y = self.generator.sample_inputs(batch_size, self.device)
        with torch.no_grad(), self._autocast():
            return self._generate(z, y, train=False), y

    def student_step(self) -> dict:
        """One update of S on a fresh batch."""
        cfg = self.cfg
        x, y = self.student_inputs(self.batch_size)
        with self._autocast():
            with torch.no_grad():
                t_logits, t_feat = self._teacher(x, features=True, bn=False)
            s_logits, s_feat = self._student_train(x, return_features=True)
        t_logits, t_feat, s_logits, s_feat = (
            t_logits.float(),
            t_feat.float(),
            s_logits.float(),
            s_feat.float(),
        )
        labels = (
            self._pseudo_labels(y, t_logits)
            if y is not None and cfg.input_source in ("generator", "inversion")
            else None
        )
        loss, terms = student_loss(
            t_logits,
            s_logits,
            self.loss_cfg,
            labels=labels,
            t_feat=t_feat,
            s_feat=self.projection(s_feat) if cfg.student_scl else s_feat,
        )
        self._update(self.opt_s, self.scaler_s, loss)
        return {k: v.detach() for k, v in terms.items()}

    def iterate(self) -> dict:
        """One full iteration: g_steps generator updates, then s_steps student updates."""
        out: dict[str, torch.Tensor] = {}
        trains_generator = self.uses_generator and (
            self.cfg.use_adv
            or self.cfg.use_bn
            or self.cfg.use_scl
            or self.cfg.teacher_ce
            or self.cfg.use_dafl
        )
        # DFAD's order: the student learns, then the generator attacks it
        if self.cfg.student_first:
            self._student_steps(out)
        if self.inverts and self.iteration % self.cfg.inversion_every == 0:
            out.update({"g/" + k: v for k, v in self.inversion_step().items()})
        if trains_generator:
            for _ in range(self.cfg.g_steps):
                for k, v in self.generator_step().items():
                    out["g/" + k] = out.get("g/" + k, 0) + v / self.cfg.g_steps
            self._schedule(self.sched_g)
        self.generator.train()
        if not self.cfg.student_first:
            self._student_steps(out)
        self._schedule(self.sched_s)
        self.iteration += 1
        return out

    def _student_steps(self, out: dict) -> None:
        for _ in range(self.cfg.s_steps):
            for k, v in self.student_step().items():
                out["s/" + k] = out.get("s/" + k, 0) + v / self.cfg.s_steps

    @torch.no_grad()
    def diagnostics(self, per_class: int = 32) -> dict:
        """Diversity, class balance, teacher confidence and FID of the student's current inputs."""
        from .diagnostics import real_features, synthetic_diagnostics

        if self.bn_loss is not None:
            self.bn_loss.enabled = False
        if self.test_set is not None and self._real_feats is None:
            self._real_feats = real_features(self.teacher, self.test_set, self.device)
        # Diagnostics must not change the training's random streams, on the CPU or on the GPU.
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            if self.uses_generator:
                x, y = generate_per_class(
                    self.generator, per_class, self.device, seed=1234
                )
                cond = y if self.cfg.conditional else None
            elif self.inverts:
                x, cond = self.pool.latest(per_class * self.num_classes)
            else:
                torch.manual_seed(1234)
                x, _ = self.student_inputs(per_class * self.num_classes)
                cond = None
        return synthetic_diagnostics(
            self.teacher, x, cond, self.num_classes, self._real_feats
        )

    # ------------------------------------------------------- checkpointing
    def state_dict(self) -> dict:
        return dict(
            iteration=self.iteration,
            elapsed=self.elapsed,
            config=self.cfg.to_dict(),
            student=self.student.state_dict(),
            generator=self.generator.state_dict(),
            projection=self.projection.state_dict(),
            opt_g=self.opt_g.state_dict(),
            opt_s=self.opt_s.state_dict(),
            sched_s=self.sched_s.state_dict(),
            sched_g=self.sched_g.state_dict(),
            rng=rng_state(self.device),
            last_student_acc=self.last_student_acc,
            best_student_acc=self.best_student_acc,
            acc_history=[list(h) for h in self.acc_history],
            sessions=self.sessions.sessions,
            inputs=dict(self.inputs),
            **({} if self.pool is None else dict(pool=self.pool.state_dict())),
            **(
                {}
                if self.replay_pool is None
                else dict(replay_pool=self.replay_pool.state_dict())
            ),
            **(
                {}
                if self.cmi_head is None
                else dict(
                    cmi_head=self.cmi_head.state_dict(),
                    opt_head=self.opt_head.state_dict(),
                    cmi_bank=self.cmi_bank.state_dict(),
                )
            ),
            **(
                {}
                if self.scaler_g is None
                else dict(
                    scaler_g=self.scaler_g.state_dict(),
                    scaler_s=self.scaler_s.state_dict(),
                )
            ),
        )

    def load_state_dict(self, state: dict) -> None:
        self.student.load_state_dict(state["student"])
        self.generator.load_state_dict(state["generator"])
        self.projection.load_state_dict(state["projection"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_s.load_state_dict(state["opt_s"])
        self.sched_s.load_state_dict(state["sched_s"])
        self.sched_g.load_state_dict(state["sched_g"])
        if self.scaler_g is not None and "scaler_g" in state:
            self.scaler_g.load_state_dict(state["scaler_g"])
            self.scaler_s.load_state_dict(state["scaler_s"])
        self.iteration = state["iteration"]
        self.inputs = dict(state.get("inputs") or {})
        if self.pool is not None and "pool" in state:
            self.pool.load_state_dict(state["pool"], self.device)
        if self.replay_pool is not None and "replay_pool" in state:
            self.replay_pool.load_state_dict(state["replay_pool"], self.device)
        if self.cmi_head is not None and "cmi_head" in state:
            self.cmi_head.load_state_dict(state["cmi_head"])
            self.opt_head.load_state_dict(state["opt_head"])
            self.cmi_bank.load_state_dict(state["cmi_bank"], self.device)
        self.elapsed = state["elapsed"]
        self.last_student_acc = state.get("last_student_acc")
        self.best_student_acc = state.get("best_student_acc", self.last_student_acc)
        # absent before 0.4.0
        self.acc_history = [list(h) for h in state.get("acc_history", [])]
        # absent in runs saved before sessions were kept
        self.sessions = SessionLog(state.get("sessions"))
        self._restore_rng(state)

    def _restore_rng(self, state: dict) -> None:
        """This rank's random state: its own when the run had as many ranks, else a fresh per-rank stream."""
        per_rank = state.get("rng_per_rank")
        if per_rank is not None and len(per_rank) == self.dist.world_size:
            set_rng_state(per_rank[self.dist.rank], self.device)
        elif self.dist.is_main:
            set_rng_state(state["rng"], self.device)
        else:  # resumed with more processes than the run had: still a distinct, reproducible stream per rank
            seed_everything(self.cfg.seed + self.dist.rank + 1_000_003 * self.iteration)

    def student_meta(self) -> dict:
        meta = {
            k: v
            for k, v in self.teacher_meta.items()
            if k not in ("test_acc", "train_config", "version", "source_file")
        }
        return dict(
            meta,
            model=self.cfg.student,
            method=self.cfg.method,
            iteration=self.iteration,
        )

    def generator_meta(self) -> dict:
        meta = self.teacher_meta
        return dict(
            generator=self.generator.config(),
            class_names=list(meta["class_names"]),
            mean=list(meta["mean"]),
            std=list(meta["std"]),
            dataset=meta.get("dataset"),
            method=self.cfg.method,
            iteration=self.iteration,
        )

    def sync_buffers(self) -> None:
        """Give every rank rank 0's BN running statistics (each rank updates its own between DDP forwards)."""
        self.dist.broadcast_module(self.student, buffers_only=True)
        self.dist.broadcast_module(self.generator, buffers_only=True)

    #: Fractions of the budget at which the student is always evaluated (time to accuracy, chapter 7).
    BUDGET_FRACTIONS = (0.25, 0.5, 1.0)

    def budget_marks(self) -> set:
        """The iterations at ``BUDGET_FRACTIONS`` of the budget (evaluated whatever ``eval_every`` is)."""
        return {max(1, round(f * self.cfg.iters)) for f in self.BUDGET_FRACTIONS}

    def accuracy_at(self, fraction: float) -> Optional[float]:
        """Test accuracy at the evaluation at ``fraction`` of the budget (None if the run has not got there
        or evaluated there, e.g. without a test set)."""
        mark = max(1, round(fraction * self.cfg.iters))
        return next((acc for it, acc in self.acc_history if it == mark), None)

    def time_to_accuracy(self) -> dict:
        """``{"0.25": acc, "0.5": acc, "1.0": acc}``: test accuracy at those fractions of the budget."""
        return {str(f): self.accuracy_at(f) for f in self.BUDGET_FRACTIONS}

    def close(self) -> None:
        if self.bn_loss is not None:
            self.bn_loss.remove()
        if self.cmi_means is not None:
            self.cmi_means.remove()
