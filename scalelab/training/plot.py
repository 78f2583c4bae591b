"""Training and evaluation loss of several runs on one figure.

    python -m scalelab.plot runs/a runs/b ... [--x steps|tokens|flops] [--out runs.png]

Reads each workdir's metrics.jsonl (the record sweeps read too). Left: the
training loss of every log interval; right: the evaluation loss. Against
tokens or FLOPs the x axis is logarithmic, as scaling curves are read; the
loss axis is logarithmic when it spans more than a factor of two. A sweep
draws the same figure of all its points (runs.png), coloured by parameter count.
"""
from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib import ticker  # noqa: E402
import numpy as np  # noqa: E402

from scalelab.core import cli
from scalelab.training import metrics  # noqa: E402

X_AXES = {'steps': 'step', 'tokens': 'tokens', 'flops': 'training FLOPs (counted)'}
# Where a logarithmic loss axis is labelled within each decade: enough to read a value off
# (1.6, 1.8 between 1 and 2), and never '3 x 10^0'.
LOSS_TICKS = (1.0, 1.2, 1.4, 1.6, 1.8, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0)


def loss_axis(ax, losses) -> None:
    """A loss y axis: logarithmic when the losses span more than a factor of two (labelled
    at LOSS_TICKS), else linear; either way ticked densely enough to read a value."""
    losses = np.asarray(losses, float)
    losses = losses[np.isfinite(losses) & (losses > 0)]
    if losses.size and losses.max() / losses.min() > 2:
        ax.set_yscale('log')
        ax.yaxis.set_major_locator(ticker.LogLocator(subs=LOSS_TICKS))
        ax.yaxis.set_major_formatter(ticker.FormatStrFormatter('%g'))
        ax.yaxis.set_minor_formatter(ticker.NullFormatter())
    else:
        ax.yaxis.set_major_locator(ticker.MaxNLocator(8))


def plot_runs(runs: dict[str, Path], x: str, path: Path, title: str = '',
              color_by: dict[str, float] | None = None, color_label: str = 'parameters') -> plt.Figure:
    """The figure (also saved to `path`): one colour per run, by name or by `color_by` (log scale)."""
    if x not in X_AXES:
        raise ValueError(f'--x={x!r}: not one of {", ".join(X_AXES)}')
    data = {label: metrics.curves(workdir, metrics.X_KEYS[x]) for label, workdir in runs.items()}
    fig, (train_ax, eval_ax) = plt.subplots(1, 2, figsize=(12, 4.8), sharex=True, sharey=True)
    if color_by:
        norm = matplotlib.colors.LogNorm(min(color_by.values()), max(color_by.values()))
        colors = {label: plt.cm.viridis(norm(color_by[label])) for label in data}
    else:
        colors = {label: f'C{i % 10}' for i, label in enumerate(data)}
    for label, series in data.items():
        tx, ty = series['train']
        train_ax.plot(tx, ty, color=colors[label], lw=1, alpha=0.85, label=None if color_by else label)
        ex, ey = series['eval']
        eval_ax.plot(ex, ey, color=colors[label], lw=1.5, marker='o', ms=3, label=None if color_by else label)
    losses = np.concatenate([np.concatenate([s['train'][1], s['eval'][1]]) for s in data.values()])
    losses = losses[np.isfinite(losses) & (losses > 0)]
    for ax, name in ((train_ax, 'training loss'), (eval_ax, 'evaluation loss')):
        ax.set_xlabel(X_AXES[x])
        ax.set_title(name)
        ax.grid(True, which='both', alpha=0.3)
        if x != 'steps':
            ax.set_xscale('log')
            ax.xaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
            ax.xaxis.set_major_formatter(ticker.EngFormatter(sep=''))  # 20k, 100k, 3G: short labels
            ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        loss_axis(ax, losses)
    train_ax.set_ylabel('loss (nats per token)')
    if color_by:
        mappable = plt.cm.ScalarMappable(norm=norm, cmap='viridis')
        bar = fig.colorbar(mappable, ax=[train_ax, eval_ax], label=color_label, pad=0.01)
        for axis_format in (bar.ax.yaxis.set_major_formatter, bar.ax.yaxis.set_minor_formatter):
            axis_format(ticker.EngFormatter(sep=''))  # 20k, not 2 x 10^4
    elif len(data) <= 12:
        eval_ax.legend(fontsize=8)
    fig.suptitle(title or ', '.join(data), fontsize=10)
    fig.savefig(path, dpi=130, bbox_inches='tight')
    return fig


def main(argv: list[str] | None = None) -> int:
    p = cli.ArgumentParser(prog='python -m scalelab.plot', description=__doc__.split('\n\n')[0])
    p.add_argument('workdirs', nargs='+', help='run directories (each with a metrics.jsonl)')
    p.add_argument('--x', default='steps', choices=sorted(X_AXES), help='the x axis (default steps)')
    p.add_argument('--out', default='runs.png', help='the PNG to write (default runs.png)')
    p.add_argument('--title', default='')
    args = p.parse_args(argv)
    labels = [Path(w).name or str(w) for w in args.workdirs]
    runs = dict(zip(labels if len(set(labels)) == len(labels) else args.workdirs, map(Path, args.workdirs)))
    out = png_path(Path(args.out))
    try:
        fig = plot_runs(runs, args.x, out, args.title)
    except (FileNotFoundError, ValueError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    plt.close(fig)
    print(f'wrote {out} ({len(runs)} run{"s" if len(runs) != 1 else ""}, loss against {args.x})')
    return 0


def png_path(out: Path) -> Path:
    """Where --out puts the figure: into a directory as runs.png; a name without a suffix gets .png."""
    if out.is_dir():
        return out / 'runs.png'
    return out if out.suffix else out.with_name(out.name + '.png')
