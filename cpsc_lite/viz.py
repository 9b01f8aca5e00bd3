"""Figures: class-wise sample grids, training curves, feature embeddings (UMAP).

Functions return a matplotlib Figure and, given ``path``, also save it.
The book (chapters 3, 6) calls them; so does the command line.
"""

from __future__ import annotations

import os
from typing import Optional, Sequence

import numpy as np
import torch
from torch import nn

from .data import denormalize


def save_figure(fig, path: str, dpi: int = 150, replace: bool = True) -> None:
    """``fig.savefig`` written atomically (a killed run never leaves half a PNG), format from the
    suffix; with ``replace=False`` an existing file is never replaced."""
    from .checkpoint import atomic_write_bytes

    fmt = os.path.splitext(path)[1].lstrip(".").lower() or "png"
    atomic_write_bytes(path, lambda f: fig.savefig(f, dpi=dpi, format=fmt), replace)


def plain_text(text) -> str:
    """``text`` as matplotlib shows it literally: a class named ``$x$`` is no formula."""
    return str(text).replace("$", r"\$")


def _matplotlib():
    """``import matplotlib``, where a ``MPLBACKEND`` that names no backend (which makes the import
    itself fail) is ignored with a note: figures are files here, drawn with Agg."""
    try:
        import matplotlib
    except ValueError as exc:
        if "backend" not in str(exc) or "MPLBACKEND" not in os.environ:
            raise
        import sys

        for name in [m for m in sys.modules if m.split(".")[0] == "matplotlib"]:
            del sys.modules[name]  # the failed import left parts behind
        wrong = os.environ.pop("MPLBACKEND")
        print(
            f"note: MPLBACKEND={wrong} is not a matplotlib backend; ignoring it (figures are "
            "drawn with Agg)",
            file=sys.stderr,
        )
        import matplotlib
    return matplotlib


def _plt():
    matplotlib = _matplotlib()

    if (
        matplotlib.get_backend().lower()
        not in ("agg", "module://matplotlib_inline.backend_inline")
        and not _in_notebook()
    ):
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _in_notebook() -> bool:
    try:
        from IPython import get_ipython

        return get_ipython() is not None and "IPKernelApp" in get_ipython().config
    except Exception:
        return False


def image_grid(
    images: torch.Tensor, rows: int, mean: Sequence[float], std: Sequence[float]
) -> np.ndarray:
    """Tile normalised images ``[rows*cols, C, H, W]`` into one ``[H', W', C]`` array in [0, 1]."""
    from torchvision.utils import make_grid

    x = denormalize(images.detach().float().cpu(), mean, std)
    cols = len(x) // rows
    grid = make_grid(x, nrow=cols, padding=1, pad_value=1.0)
    return grid.permute(1, 2, 0).numpy()


@torch.no_grad()
def teacher_predictions(
    teacher: torch.nn.Module, images: torch.Tensor, batch_size: int = 512
) -> torch.Tensor:
    """The teacher's predicted class for each image (in eval mode, on the teacher's device)."""
    was_training = teacher.training
    teacher.eval()
    device = next(teacher.parameters()).device
    preds = torch.cat(
        [
            teacher(images[i : i + batch_size].to(device)).argmax(1).cpu()
            for i in range(0, len(images), batch_size)
        ]
    )
    teacher.train(was_training)
    return preds


def plot_samples(
    images: torch.Tensor,
    labels: torch.Tensor,
    class_names: Sequence[str],
    mean,
    std,
    title: str = "Synthetic images, one row per class",
    path: Optional[str] = None,
    ax=None,
    predictions: Optional[torch.Tensor] = None,
    xlabel: Optional[str] = None,
):
    """Class-wise grid (rows = classes, as :func:`cpsc_lite.generator.generate_per_class` makes them), rows labelled
    by name.

    With the teacher's ``predictions`` for the images, the right edge of each row shows the share of
    that row the teacher assigns to the row's class (whether the row is class-specific)."""
    plt = _plt()
    k = int(labels.max()) + 1
    grid = image_grid(images, k, mean, std)
    per_class = len(images) // k
    if ax is None:
        fig, ax = plt.subplots(
            figsize=(min(12, 1.0 + 0.55 * per_class), 0.55 * k + 0.8)
        )
    else:
        fig = ax.figure
    ax.imshow(
        grid.squeeze(-1) if grid.shape[-1] == 1 else grid,
        cmap="gray" if grid.shape[-1] == 1 else None,
        interpolation="nearest",
    )
    cell = grid.shape[0] / k
    ax.set_yticks([cell * (i + 0.5) for i in range(k)])
    ax.set_yticklabels([plain_text(n) for n in class_names][:k])
    ax.set_xticks([])
    ax.set_ylabel("conditioning class y")
    ax.set_xlabel(xlabel or f"{per_class} samples per class (different noise z)")
    ax.set_title(plain_text(title))
    if predictions is not None:
        rows = torch.as_tensor(labels).cpu()[::per_class][:k]
        hits = (
            (torch.as_tensor(predictions).cpu().view(k, per_class) == rows.view(k, 1))
            .float()
            .mean(1)
        )
        right = ax.secondary_yaxis("right")
        right.set_yticks(
            [cell * (i + 0.5) for i in range(k)],
            labels=[f"{float(h):.0%}" for h in hits],
        )
        right.set_ylabel("teacher agrees", fontsize=8)
        right.tick_params(labelsize=7, length=0)
    fig.tight_layout()
    if path:
        save_figure(fig, path, dpi=150)
    return fig


def plot_curves(
    records: list[dict],
    path: Optional[str] = None,
    teacher_acc: Optional[float] = None,
    title: str = "CPSC-DFKD training",
):
    """Loss terms of generator and student, and student test accuracy, against iterations."""
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    its = [r["iter"] for r in records]
    for ax, prefix, name in ((axes[0], "g/", "generator"), (axes[1], "s/", "student")):
        keys = sorted(
            {
                k
                for r in records
                for k in r
                if k.startswith(prefix) and k != prefix + "total"
            }
        )
        for k in keys:
            ax.plot(its, [r.get(k, np.nan) for r in records], label=k[len(prefix) :])
        ax.set_title(f"{name} loss terms")
        ax.set_xlabel("iteration")
        ax.set_ylabel("loss")
        ax.legend(fontsize=8)
        if prefix == "g/" and keys:
            ax.set_yscale("symlog", linthresh=1.0)
    ev = [(r["iter"], r["student_acc"]) for r in records if "student_acc" in r]
    if ev:
        axes[2].plot(*zip(*ev), marker="o", ms=3, label="student (test)")
    if teacher_acc is not None:
        axes[2].axhline(teacher_acc, color="k", ls="--", lw=1, label="teacher (test)")
    axes[2].set_title("test accuracy")
    axes[2].set_xlabel("iteration")
    axes[2].set_ylabel("top-1 accuracy")
    axes[2].set_ylim(0, 1.02)
    axes[2].legend(loc="lower right")
    fig.suptitle(title)
    fig.tight_layout()
    if path:
        save_figure(fig, path, dpi=120)
    return fig


def umap_embedding(
    features: np.ndarray, seed: int = 0, n_neighbors: int = 15
) -> np.ndarray:
    """2-D UMAP of feature vectors (needs the ``umap-learn`` extra; book chapter 6), its chatter silenced."""
    import warnings

    try:
        import umap
    except ImportError:
        from . import CpscError

        raise CpscError(
            "UMAP plots need the umap-learn package: pip install 'cpsc-lite[viz]'"
        ) from None
    reducer = umap.UMAP(n_neighbors=n_neighbors, min_dist=0.1, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return reducer.fit_transform(np.asarray(features, dtype=np.float32))


def plot_embedding(
    points: np.ndarray,
    labels: np.ndarray,
    sources: np.ndarray,
    class_names: Sequence[str],
    title: str = "Teacher features (UMAP)",
    path: Optional[str] = None,
    ax=None,
):
    """Scatter of a 2-D embedding: colour = class, marker = source (e.g. 'real' dots, 'synthetic' crosses)."""
    plt = _plt()
    if ax is None:
        fig, ax = plt.subplots(figsize=(7, 6))
    else:
        fig = ax.figure
    cmap = plt.get_cmap("tab10" if len(class_names) <= 10 else "tab20")
    markers = {name: m for name, m in zip(sorted(set(sources)), ["o", "x", "^", "s"])}
    for src, marker in markers.items():
        for c in range(len(class_names)):
            sel = (sources == src) & (labels == c)
            if sel.any():
                ax.scatter(
                    points[sel, 0],
                    points[sel, 1],
                    s=10 if marker == "o" else 18,
                    marker=marker,
                    color=cmap(c % cmap.N),
                    alpha=0.6,
                    label=plain_text(class_names[c])
                    if src == sorted(markers)[0]
                    else None,
                )
    handles = [
        plt.Line2D([], [], ls="", marker=m, color="gray", label=s)
        for s, m in markers.items()
    ]
    leg1 = ax.legend(handles=handles, loc="upper left", fontsize=8, title="source")
    ax.add_artist(leg1)
    ax.legend(loc="upper right", fontsize=7, ncol=2, title="class", markerscale=1.5)
    ax.set_title(title)
    ax.set_xlabel("UMAP 1")
    ax.set_ylabel("UMAP 2")
    fig.tight_layout()
    if path:
        save_figure(fig, path, dpi=130)
    return fig


def plot_differences(
    tables: dict,
    measure: str = "student_acc",
    reference: str = "cpsc",
    path: Optional[str] = None,
):
    """Results at a glance: per benchmark table (``{title: results.json dict}``) and method, the paired
    difference ``method - reference`` in ``measure`` (percentage points) with its 95 % CI over seeds.
    Filled markers: the interval excludes 0 (a real difference); open: it does not."""
    plt = _plt()
    rows = [
        (title, name, d[measure])
        for title, results in tables.items()
        if results
        for name, m in results["methods"].items()
        if (d := m.get(f"diff_vs_{reference}")) and measure in d
    ]
    labels = [_wrap_spec(f"{name} ({title})") for title, name, _ in reversed(rows)]
    height = 0.32 * sum(label.count("\n") + 1 for label in labels) + 0.15 * len(rows)
    fig, ax = plt.subplots(figsize=(8, max(height, 1.0) + 1.2))
    for i, (title, name, d) in enumerate(reversed(rows)):
        lo, hi = 100 * d["ci95"][0], 100 * d["ci95"][1]
        colour = (
            "tab:red"
            if d["real"] and d["mean"] < 0
            else "tab:green"
            if d["real"]
            else "tab:grey"
        )
        ax.plot([lo, hi], [i, i], color=colour, lw=2)
        ax.plot(
            100 * d["mean"],
            i,
            "o",
            color=colour,
            mfc=colour if d["real"] else "white",
            ms=7,
        )
    ax.set_yticks(range(len(rows)), labels, fontsize=8)
    ax.axvline(0, color="k", lw=1)
    scale = ""
    widest = max((abs(100 * x) for *_, d in rows for x in d["ci95"]), default=0)
    if (
        widest > 20
    ):  # a few points and tens of points on one axis: linear near 0, log beyond
        from matplotlib.ticker import FixedLocator, FuncFormatter

        ax.set_xscale("symlog", linthresh=5)
        ticks = [
            t for t in (-50, -20, -10, -5, -2, 0, 2, 5, 10, 20, 50) if abs(t) <= widest
        ]
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.xaxis.set_major_formatter(
            FuncFormatter(lambda v, _: f"{v:+g}" if v else "0")
        )
        scale = "\nscale: linear within ±5 points, logarithmic beyond"
    ax.set(
        xlabel=f"{measure.replace('_', ' ')}: method minus {reference} "
        f"(percentage points, 95 % CI){scale}",
        title=f"Each method against {reference} over the same seeds",
    )
    fig.tight_layout()
    if path:
        save_figure(fig, path)
    return fig


def _wrap_spec(label: str, width: int = 34) -> str:
    """A row label on several lines, broken after the ``:`` of a variant's settings
    (``cpsc:bn_first_weight=10.0:...``), so that long variant names do not squeeze the plot."""
    lines, line = [], ""
    for part in label.split(":"):
        piece = part if not line else ":" + part
        if line and len(line) + len(piece) > width:
            lines.append(line + ":")
            line = part
        else:
            line += piece
    return "\n".join(lines + [line])


@torch.no_grad()
def same_noise_grid(
    generator,
    mean: Sequence[float],
    std: Sequence[float],
    class_names: Sequence[str],
    n_noise: int = 6,
    seed: int = 0,
    title: str = "",
    ax=None,
):
    """One row per noise vector z, one column per class y: what the label alone changes (book chapter 3).
    Returns the images, row-major."""
    import matplotlib.pyplot as plt

    k = generator.num_classes
    z = torch.randn(
        n_noise, generator.nz, generator=torch.Generator().manual_seed(seed)
    ).repeat_interleave(k, 0)
    y = torch.arange(k).repeat(n_noise)
    generator = generator.cpu().eval()
    images = generator(z, y)
    grid = image_grid(images, n_noise, mean, std)
    if ax is None:
        _, ax = plt.subplots(figsize=(0.5 * k + 1.2, 0.5 * n_noise + 1.0))
    ax.imshow(grid, interpolation="nearest")
    cell_w, cell_h = grid.shape[1] / k, grid.shape[0] / n_noise
    ax.set_xticks([cell_w * (i + 0.5) for i in range(k)])
    ax.set_xticklabels([plain_text(n) for n in class_names][:k])
    ax.set_yticks([cell_h * (i + 0.5) for i in range(n_noise)])
    ax.set_yticklabels([f"z{i + 1}" for i in range(n_noise)])
    ax.set_xlabel("conditioning class y")
    ax.set_ylabel("noise vector")
    ax.set_title(title)
    return images


def compare_grids(
    panels: dict,
    mean: Sequence[float],
    std: Sequence[float],
    class_names: Sequence[str],
    teacher=None,
    title: Optional[str] = None,
    width: float = 5.0,
    per_row: int = 2,
):
    """Class-wise sample grids, ``per_row`` side by side (more panels wrap onto further rows, so
    that labels stay readable at a page's column width); ``panels`` maps a caption to
    ``(images, labels)``; with a ``teacher`` each row shows the share it assigns to that class."""
    import math

    plt = _plt()
    k = len(class_names)
    cols = min(len(panels), per_row)
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(
        rows, cols, figsize=(width * cols, rows * (0.42 * k + 1.4)), squeeze=False
    )
    for ax in axes.flat[len(panels) :]:
        ax.axis("off")  # an odd panel count leaves the last row's other place empty
    for ax, (caption, (images, labels)) in zip(axes.flat, panels.items()):
        real = caption.lower().startswith("real")
        plot_samples(
            images,
            labels,
            class_names,
            mean,
            std,
            title=caption,
            ax=ax,
            predictions=None
            if teacher is None
            else teacher_predictions(teacher, images),
            xlabel=f"{len(images) // k} test images per class" if real else None,
        )
        if real:
            ax.set_ylabel("class (true label)")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_bn_statistics(
    model: nn.Module, image_sets: dict, layers=((0, "first"), (-1, "last"))
):
    """Book chapter 3: per channel, batch mean vs. running mean in some BN layers, for several image sets.

    ``image_sets`` maps a name to a stack of images. Returns ``(figure, gaps)`` where ``gaps[name]``
    is the mean absolute difference between batch and running means over all layers and channels.
    """
    import matplotlib.pyplot as plt
    from .diagnostics import bn_statistics

    stats = {name: bn_statistics(model, images) for name, images in image_sets.items()}
    fig, axes = plt.subplots(
        1, len(layers), figsize=(5.5 * len(layers), 4.6), squeeze=False
    )
    for ax, (index, where) in zip(axes[0], layers):
        for j, (name, st) in enumerate(stats.items()):
            real = name.startswith("real")
            ax.scatter(
                st[index]["running_mean"],
                st[index]["batch_mean"],
                s=16 if real else 14,
                marker="x" if real else "o",
                color="k" if real else f"C{j}",
                label=name,
            )
        lo, hi = ax.get_xlim()
        ax.plot([lo, hi], [lo, hi], color="gray", lw=1, ls="--")
        ax.set(
            title=f"{where} BN layer of the teacher",
            xlabel="running mean (training data)",
            ylabel="batch mean of the image set",
        )
        ax.legend(fontsize=8)
    fig.tight_layout()
    gaps = {
        name: float(
            np.mean([np.abs(s["batch_mean"] - s["running_mean"]).mean() for s in st])
        )
        for name, st in stats.items()
    }
    return fig, gaps


def plot_supcon(
    features: torch.Tensor, labels: torch.Tensor, temperature: float, taus=None
):
    """Book chapter 5: the toy views on the circle, each anchor's softmax over the others, and loss vs temperature."""
    import matplotlib.pyplot as plt
    from .losses import supcon_loss

    b, v, _ = features.shape
    # same order as supcon_loss: view-major
    flat = features.transpose(0, 1).reshape(b * v, -1)
    lab = labels.repeat(v)
    names = [f"{'TS'[i // b]}{i % b}" for i in range(b * v)]
    fig, axes = plt.subplots(
        1, 3, figsize=(15, 4.4), gridspec_kw=dict(width_ratios=[1, 1.25, 1.2])
    )
    ax = axes[0]
    ax.add_patch(plt.Circle((0, 0), 1, fill=False, color="lightgray"))
    for i, (x, y) in enumerate(flat.tolist()):
        ax.scatter(x, y, color=f"C{int(lab[i])}", marker="o" if i < b else "^", s=60)
        ax.annotate(
            names[i], (x, y), textcoords="offset points", xytext=(6, 4), fontsize=8
        )
    handles = [
        plt.Line2D([], [], ls="", marker="o", color="gray", label="teacher view (T)"),
        plt.Line2D([], [], ls="", marker="^", color="gray", label="student view (S)"),
    ]
    handles += [
        plt.Line2D([], [], ls="", marker="s", color=f"C{c}", label=f"class {c}")
        for c in range(int(labels.max()) + 1)
    ]
    ax.legend(handles=handles, fontsize=7, loc="center")
    ax.set(
        xlim=(-1.35, 1.35),
        ylim=(-1.35, 1.35),
        aspect="equal",
        title="normalised features (2-D toy)",
        xlabel="feature 1",
        ylabel="feature 2",
    )
    sim = flat @ flat.T / temperature
    sim.fill_diagonal_(float("-inf"))
    prob = sim.softmax(dim=1).numpy()
    ax = axes[1]
    im = ax.imshow(prob, cmap="viridis", vmin=0, vmax=1)
    positives = (lab[:, None] == lab[None, :]) & ~torch.eye(b * v, dtype=torch.bool)
    for i, j in positives.nonzero().tolist():
        ax.add_patch(
            plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, ec="white", lw=1.2)
        )
    ax.set(
        xticks=range(b * v),
        yticks=range(b * v),
        title=f"softmax over the others, tau = {temperature:.3g}\n"
        "(white boxes: positives)",
        xlabel="other vector a",
        ylabel="anchor i",
    )
    ax.set_xticklabels(names, fontsize=7, rotation=90)
    ax.set_yticklabels(names, fontsize=7)
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax = axes[2]
    taus = taus if taus is not None else np.logspace(-2, 0.7, 60)
    losses = [float(supcon_loss(features, labels, float(t))) for t in taus]
    ax.plot(taus, losses, label="SupCon loss")
    ax.scatter(
        [temperature],
        [float(supcon_loss(features, labels, temperature))],
        color="C3",
        zorder=3,
        label=f"tau = {temperature:.3g}",
    )
    ax.set(
        xscale="log",
        title="loss against temperature",
        xlabel="temperature tau",
        ylabel="loss",
    )
    ax.legend()
    fig.tight_layout()
    return fig


def plot_method_diagram(student_ce: bool = False, figsize=(9.5, 6.4)):
    """Book chapters 1 and 6: one CPSC-DFKD iteration as a diagram. G(z, y) makes a batch x that the
    frozen teacher T and the student S both see; the generator step's terms (orange) update only G,
    the student step's (blue) only S. ``student_ce`` adds the student's CE(s, y) term to the figure."""
    import matplotlib.pyplot as plt

    gen_colour, stu_colour, net_colour = "#fbe3cf", "#d6e6f5", "#eeeeee"
    fig, ax = plt.subplots(figsize=figsize)
    ax.set(xlim=(0, 1), ylim=(0, 1))
    ax.axis("off")

    def box(x, y, text, colour, **kw):
        return ax.text(
            x,
            y,
            text,
            ha="center",
            va=kw.pop("va", "center"),
            fontsize=kw.pop("fontsize", 11),
            bbox=dict(boxstyle="round,pad=0.45", fc=colour, ec="0.3"),
            **kw,
        )

    def arrow(start, end, colour="0.25", rad=0.0, ls="-"):
        ax.annotate(
            "",
            xy=end,
            xytext=start,
            arrowprops=dict(
                arrowstyle="-|>",
                color=colour,
                lw=1.4,
                ls=ls,
                connectionstyle=f"arc3,rad={rad}",
                shrinkA=2,
                shrinkB=2,
            ),
        )

    # Top row: what is computed.
    box(0.08, 0.90, "noise\n$z \\sim \\mathcal{N}(0, I)$", "white")
    box(0.08, 0.64, "class $y$\n(uniform over\nthe $K$ classes)", "white")
    box(
        0.31,
        0.77,
        "generator $G(z, y)$\n(class-conditional\nbatch norm, ch. 3)",
        gen_colour,
    )
    box(0.54, 0.77, "synthetic batch\n$x = G(z, y)$", "white")
    box(0.86, 0.91, "teacher $T$ (frozen)\n$t = T(x)$", net_colour)
    box(0.70, 0.58, "student $S$\n$s = S(x)$", stu_colour)
    arrow((0.14, 0.87), (0.20, 0.81))
    arrow((0.15, 0.67), (0.20, 0.73))
    arrow((0.42, 0.77), (0.455, 0.77))
    arrow((0.625, 0.80), (0.75, 0.89))
    arrow((0.60, 0.73), (0.66, 0.63))
    # Bottom row: the two objectives, and what each one updates.
    g_terms = (
        "generator step: minimise $\\mathcal{L}_G$, update $G$ only\n"
        "$-\\mathrm{KL}(p_t \\| p_s) - \\alpha\\, \\log \\mathrm{IKD}(\\bar t, s)$   disagree (ch. 6)\n"
        "$+\\ \\beta\\ \\mathcal{L}_{BN}$   the teacher's BN statistics (ch. 3)\n"
        "$+\\ \\eta\\ \\mathrm{CE}(t, y)$   the teacher sees class $y$ (ch. 4)\n"
        "$+\\ \\gamma\\ \\mathcal{L}_{SCL}$   teacher/student features (ch. 5)"
    )
    s_terms = (
        "student step: minimise $\\mathcal{L}_S$,\nupdate $S$ only (a fresh batch, $G$ fixed)\n"
        "$\\mathrm{KL}(p_t \\| p_s) + \\alpha\\ \\mathrm{IKD}(t, s)$   agree"
    )
    if student_ce:
        s_terms += "\n$+\\ \\eta\\ \\mathrm{CE}(s, y)$   (switch student_ce)"
    # tops aligned
    box(0.27, 0.30, g_terms, gen_colour, fontsize=10.5, multialignment="left", va="top")
    box(0.80, 0.30, s_terms, stu_colour, fontsize=10.5, multialignment="left", va="top")
    arrow((0.78, 0.87), (0.40, 0.325))  # T -> L_G
    arrow((0.64, 0.545), (0.44, 0.325))  # S -> L_G
    arrow((0.88, 0.865), (0.88, 0.325))  # T -> L_S
    arrow((0.72, 0.535), (0.76, 0.325))  # S -> L_S
    # Where the gradients go (dashed): L_G into G, L_S into S; T stays as it is.
    arrow((0.13, 0.325), (0.25, 0.70), colour="#d9731a", rad=-0.2, ls="--")
    ax.text(
        0.085,
        0.46,
        "gradient of\n$\\mathcal{L}_G$",
        color="#d9731a",
        ha="center",
        fontsize=10,
    )
    arrow((0.965, 0.325), (0.765, 0.555), colour="#2f6fb0", rad=0.45, ls="--")
    ax.text(
        0.975,
        0.50,
        "gradient\nof $\\mathcal{L}_S$",
        color="#2f6fb0",
        ha="center",
        fontsize=10,
    )
    ax.text(
        0.5,
        0.02,
        "one iteration = g_steps generator steps, then s_steps student steps; "
        "dashed: what each objective updates",
        fontsize=10,
        color="0.3",
        ha="center",
    )
    fig.tight_layout()
    return fig
