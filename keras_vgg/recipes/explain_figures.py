"""The pictures of `keras-vgg-explain`: Grad-CAM overlays with the top
classes, grids of feature maps and of filter patterns.

Matplotlib's object-oriented API with the Agg canvas: no pyplot state, no
display needed. Heatmaps use perceptual colormaps (`inferno` for Grad-CAM,
`viridis` for activations), whose lightness grows with the value, so they
read right in grey too.
"""

import math

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

DPI = 100
GRADCAM_SIZE = (9.0, 3.2)   # inches: 900x320 pixels at DPI
TILE = 1.2                  # inches per grid cell


def _save(figure, path):
    FigureCanvasAgg(figure)
    figure.savefig(path, dpi=DPI)


def gradcam_figure(path, image, heatmap, top, explained, layer):
    """Writes the image, its Grad-CAM overlay and the top classes.

    Args:
        path: the PNG to write.
        image: RGB in [0, 255], `(H, W, 3)`: what the model saw, before
            normalisation.
        heatmap: `(H, W)` in [0, 1].
        top: `(name, probability)` pairs, best first.
        explained: the name of the class the heatmap explains.
        layer: the layer the heatmap was computed at.
    """
    figure = Figure(figsize=GRADCAM_SIZE, dpi=DPI)
    axes = figure.subplots(1, 3, gridspec_kw={"width_ratios": [1, 1, 1.3]})
    shown = np.clip(image, 0, 255).astype("uint8")
    axes[0].imshow(shown, interpolation="nearest")
    axes[0].set_title("image", fontsize=9)
    axes[1].imshow(shown, interpolation="nearest")
    overlay = axes[1].imshow(heatmap, cmap="inferno", alpha=0.55, vmin=0, vmax=1,
                             interpolation="bilinear")
    axes[1].set_title(f"Grad-CAM: {explained}\n({layer})", fontsize=9)
    figure.colorbar(overlay, ax=axes[1], fraction=0.046, pad=0.03)
    for ax in axes[:2]:
        ax.set_axis_off()
    names = [name for name, _ in top][::-1]
    probabilities = [p for _, p in top][::-1]
    bars = axes[2].barh(range(len(top)), probabilities, color="#3b528b")
    bars[-1].set_color("#fde725")
    axes[2].set_yticks(range(len(top)), [_short(n) for n in names], fontsize=8)
    axes[2].set_xlim(0, 1)
    axes[2].set_title(f"top {len(top)}", fontsize=9)
    for bar, p in zip(bars, probabilities):
        axes[2].text(min(p + 0.02, 0.8), bar.get_y() + bar.get_height() / 2,
                     f"{p:.1%}", va="center", fontsize=8)
    axes[2].tick_params(axis="x", labelsize=7)
    figure.subplots_adjust(left=0.02, right=0.98, top=0.82, bottom=0.1, wspace=0.45)
    _save(figure, path)


def _short(name, width=18):
    return name if len(name) <= width else name[:width - 1] + "…"


def grid_figure(path, tiles, title, cmap=None, columns=8, labels=None):
    """Writes a grid of images: feature maps (2-D, `cmap`) or RGB patterns.

    Args:
        path: the PNG to write.
        tiles: a sequence of `(h, w)` maps or `(h, w, 3)` RGB images in [0, 1].
        title: the figure's title.
        cmap: colormap for 2-D maps (each scaled to its own range).
        columns: tiles per row, at most.
        labels: optional caption per tile.
    """
    n = len(tiles)
    columns = min(columns, n)
    rows = math.ceil(n / columns)
    figure = Figure(figsize=(TILE * columns, TILE * rows + 0.4), dpi=DPI)
    axes = np.atleast_1d(figure.subplots(rows, columns, squeeze=False)).ravel()
    for i, ax in enumerate(axes):
        ax.set_axis_off()
        if i >= n:
            continue
        tile = tiles[i]
        if tile.ndim == 2:
            ax.imshow(tile, cmap=cmap, interpolation="nearest")
        else:
            ax.imshow(np.clip(tile, 0, 1), interpolation="nearest")
        if labels is not None:
            ax.set_title(labels[i], fontsize=7, pad=2)
    figure.suptitle(title, fontsize=9)
    figure.subplots_adjust(left=0.01, right=0.99, bottom=0.01,
                           top=1 - 0.45 / (TILE * rows + 0.4),
                           wspace=0.05, hspace=0.25)
    _save(figure, path)
