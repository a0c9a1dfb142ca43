"""Figures of a fit (matplotlib, Agg): reprojection overlay, joint-angle curves, GC_d curve."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from mjx_biomech.analysis import metrics
from mjx_biomech.analysis.results import file_stem
from mjx_biomech.capture.projection import project
from mjx_biomech.io import atomic_write

_JOINTS = ("hip_flexion", "hip_adduction", "knee_angle", "ankle_angle", "arm_flex", "elbow_flex")


def _figure(rows: int = 1, cols: int = 1, figsize=(5, 3.5)):
    """A figure outside pyplot's global state (nothing to close, safe in threads) and its axes."""
    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig, fig.subplots(rows, cols, squeeze=False)


def _savefig(fig, path: Path) -> Path:
    with atomic_write(path, "wb", encoding=None) as f:
        fig.savefig(f, format="png", dpi=110)
    return path


def reprojection_overlay(result, path, trial: int = 0, frame: int | None = None) -> Path:
    """Keypoints as the fit labelled them (dots, alpha = confidence) and projected model markers
    (crosses) of one frame (default the middle one) in every camera; a camera without a
    detection in that frame shows the markers alone."""
    t = result.trials[trial]
    frame = t.capture.num_frames // 2 if frame is None else frame
    uv = np.asarray(project(result.rig, result.markers(trial)[frame]), float)  # (C, J, 2)
    C = len(result.rig)
    cols = min(C, 4)
    rows = (C + cols - 1) // cols
    fig, axes = _figure(rows, cols, figsize=(2.4 * cols, 3.6 * rows))
    for c, ax in enumerate(axes.ravel()):
        if c >= C:
            ax.axis("off")
            continue
        w, h = result.rig.sizes[c]
        kp, conf = t.scored.keypoints[c, frame], t.scored.confidence[c, frame]
        ok = (conf > 0) & np.all(np.isfinite(kp), axis=1)
        model_ok = np.all(np.isfinite(uv[c]), axis=1)
        # Matplotlib refuses an empty per-point alpha array: a camera that saw nobody in this
        # frame shows only the model's markers.
        if ok.any():
            ax.scatter(kp[ok, 0], kp[ok, 1], s=10, c="tab:blue", alpha=np.clip(conf[ok], 0.2, 1), label="keypoints")
        else:
            ax.text(0.5, 0.5, "no detection", transform=ax.transAxes, ha="center", fontsize=7, color="grey")
        ax.scatter(uv[c, model_ok, 0], uv[c, model_ok, 1], s=14, marker="x", c="tab:red", label="model")
        # Zoom on the person (keypoints and model markers, 10 % margin), clipped to the image.
        pts = np.concatenate([kp[ok], uv[c][model_ok]])
        if len(pts):
            lo, hi = pts.min(axis=0), pts.max(axis=0)
            pad = 0.1 * max(hi - lo) + 10
            lo, hi = np.maximum(lo - pad, 0), np.minimum(hi + pad, (w, h))
        else:
            lo, hi = np.zeros(2), np.array([w, h], float)
        ax.set_xlim(lo[0], hi[0])
        ax.set_ylim(hi[1], lo[1])
        ax.set_aspect("equal")
        ax.set_title(result.rig.names[c], fontsize=8)
        ax.tick_params(labelsize=6)
    handles = {h.get_label(): h for ax in axes.ravel() for h in ax.collections}
    axes[0, 0].legend(list(handles.values()), list(handles.keys()), fontsize=6, loc="lower left")
    fig.suptitle(f"{t.name}: frame {frame} ({t.times[frame]:.2f} s)", fontsize=9)
    fig.tight_layout()
    return _savefig(fig, Path(path))


def joint_curves(result, path, trial: int = 0, truth: np.ndarray | None = None) -> Path:
    """Fitted joint angles (degrees) over time for hips, knees, ankles, shoulders, elbows, shaded
    ±1.96 σ where the fit has standard errors; dashed: ``truth`` (T, C) when given."""
    t = result.trials[trial]
    names = result.model.coordinate_names
    fig, axes = _figure(2, 3, figsize=(11, 5.5))
    for ax, joint in zip(axes.ravel(), _JOINTS):
        for side, color in (("r", "tab:red"), ("l", "tab:blue")):
            name = f"{joint}_{side}"
            if name not in names:
                continue
            i = names.index(name)
            middle = np.degrees(t.coords[:, i])
            ax.plot(t.times, middle, color=color, label=side)
            if t.coords_std is not None:
                band = 1.96 * np.degrees(t.coords_std[:, i])
                ax.fill_between(t.times, middle - band, middle + band, color=color, alpha=0.25, lw=0,
                                label=f"{side} ±1.96 σ")
            if truth is not None:
                ax.plot(t.times, np.degrees(truth[:, i]), color=color, ls="--", lw=0.8)
        ax.set_title(joint, fontsize=9)
        ax.set_xlabel("time (s)", fontsize=8)
        ax.set_ylabel("degrees", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(f"{t.name}: joint angles", fontsize=10)
    fig.tight_layout()
    return _savefig(fig, Path(path))


def gc_curve(result, path) -> Path:
    """GC_d (fraction of confident keypoints within d px) against d, per trial."""
    ds = np.linspace(0, 20, 81)
    fig, axes = _figure()
    ax = axes[0, 0]
    for i, t in enumerate(result.trials):
        ax.plot(ds, metrics.gc_curve(result.reprojection_errors(i), t.scored.confidence, ds), label=t.name)
    ax.axvline(5, color="grey", lw=0.6, ls=":")
    ax.set_xlabel("d (px)")
    ax.set_ylabel("GC_d")
    ax.set_ylim(0, 1.01)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _savefig(fig, Path(path))


def loss_curve(result, path) -> Path:
    """The loss per AdamW step or LM round, log scale."""
    fig, axes = _figure()
    ax = axes[0, 0]
    h = result.loss_history
    ax.semilogy(np.arange(1, len(h) + 1), h)
    ax.set_xlabel("step" if result.settings.get("solver") == "adam" else "LM round")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _savefig(fig, Path(path))


def save_all(result, folder: str | os.PathLike, truth: list | None = None) -> tuple[list[Path], dict[str, str]]:
    """Every figure of a fit into ``folder``, per-trial ones named by
    :func:`mjx_biomech.analysis.results.file_stem`; ``truth``: a (T, C) array per trial, dashed in
    the joint curves.

    A figure that fails is skipped, never the others: a plot must not cost the results.

    Returns:
        ``(paths, failures)``: the figures written, and file name → ``"ErrorType: message"`` of
        those that failed.
    """
    folder = Path(folder)
    jobs = []
    for i, t in enumerate(result.trials):
        stem = file_stem(t.name, i)
        jobs.append((f"{stem}_reprojection.png", lambda p, i=i: reprojection_overlay(result, p, i)))
        jobs.append((f"{stem}_joint_angles.png", lambda p, i=i: joint_curves(result, p, i, None if truth is None else truth[i])))
    jobs.append(("gc_curve.png", lambda p: gc_curve(result, p)))
    jobs.append(("loss.png", lambda p: loss_curve(result, p)))
    out, failures = [], {}
    for name, draw in jobs:
        try:
            out.append(draw(folder / name))
        except Exception as e:  # noqa: BLE001 - any plotting error is reported, not raised
            failures[name] = f"{type(e).__name__}: {e}"
    return out, failures
