#!/usr/bin/python3
"""Side-by-side view of kbit GPT runs: one PNG and one Markdown table.

  experiments/compare.py RUN_DIR [RUN_DIR...] [--out compare.png]
                         [--x tokens|step] [--smooth ROWS]

Each RUN_DIR is a folder written by `build/train` for a gpt run: it must hold
metrics.csv (header step,tokens,train_loss,val_loss,lr,ms_per_step,
tokens_per_s,elapsed_s; train rows leave val_loss empty, eval rows leave
train_loss empty) and summary.json. resolved.yaml, when present, gives the
optimizer name and state bits for the labels.

The picture has three panels: every run's train loss (smoothed, with the
raw values faint behind it) and validation loss on a log axis over the
whole run; the same curves zoomed on the second half of training; and,
with two runs or more, each later run's loss as percent above the first
run's, where runs that differ by a percent can be told apart. The first
run is drawn widest, so a run on top of it leaves it visible. The table
goes to stdout; the first run is the baseline for the percent and ratio
columns.

Needs only Debian's python3, python3-numpy and python3-matplotlib; runs in
well under a second. Exit code 2 for a folder that is not a gpt run.
"""

import argparse
import csv
import json
import math
import os
import sys

COLUMNS = ["step", "tokens", "train_loss", "val_loss", "lr", "ms_per_step",
           "tokens_per_s", "elapsed_s"]
# y ticks of the log-scale panel, in nats per byte
LOG_TICKS = [0.5, 0.6, 0.8, 1.0, 1.2, 1.4, 1.6, 1.8, 2.0, 2.5, 3.0, 4.0,
             5.0, 6.0, 8.0]
MB = 1e6  # optimizer state is reported in decimal megabytes, as the trainer


class RunError(Exception):
    """A run folder that cannot be read; reported with exit code 2."""


def read_metrics(path):
    """metrics.csv -> (train rows, eval rows), each a list of dicts."""
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header != COLUMNS:
            raise RunError(f"{path}: expected the header {','.join(COLUMNS)}"
                           f", got {','.join(header or []) or 'nothing'}")
        train, evals = [], []
        for line, fields in enumerate(reader, start=2):
            if len(fields) != len(COLUMNS):
                raise RunError(f"{path}:{line}: expected {len(COLUMNS)} "
                               f"fields, got {len(fields)}")
            try:
                row = {k: float(v) if v else None
                       for k, v in zip(COLUMNS, fields)}
            except ValueError as e:
                raise RunError(f"{path}:{line}: {e}") from None
            if row["val_loss"] is not None:
                evals.append(row)
            elif row["train_loss"] is not None:
                train.append(row)
    if not train and not evals:
        raise RunError(f"{path}: no train or eval rows")
    return train, evals


def read_optim(path):
    """The optim.name and optim.bits of a resolved.yaml, or {}.

    A line-based reader for the trainer's own flat output (a top-level
    'optim:' followed by indented 'key: value' lines), not general YAML.
    """
    found, section = {}, None
    if not os.path.isfile(path):
        return found
    with open(path) as f:
        for raw in f:
            line = raw.split("#", 1)[0].rstrip()
            if not line.strip():
                continue
            if not line.startswith(" "):
                section = line.rstrip(":").strip()
                continue
            key, sep, value = line.strip().partition(":")
            if section == "optim" and sep and key in ("name", "bits"):
                found[key] = value.strip().strip("\"'")
    return found


def load_run(folder):
    metrics = os.path.join(folder, "metrics.csv")
    summary = os.path.join(folder, "summary.json")
    if not os.path.isdir(folder):
        raise RunError(f"{folder}: expected a run folder with metrics.csv "
                       f"and summary.json, found no folder")
    for path in (metrics, summary):
        if not os.path.isfile(path):
            raise RunError(f"{folder}: expected a run folder with "
                           f"metrics.csv and summary.json, "
                           f"{os.path.basename(path)} is missing")
    try:
        with open(summary) as f:
            info = json.load(f)
    except (OSError, ValueError) as e:
        raise RunError(f"{summary}: {e}") from None
    if not isinstance(info, dict):
        raise RunError(f"{summary}: expected a JSON object")
    train, evals = read_metrics(metrics)
    optim = read_optim(os.path.join(folder, "resolved.yaml"))
    name = info.get("name") or os.path.basename(os.path.normpath(folder))
    return {"folder": folder, "name": str(name), "summary": info,
            "train": train, "evals": evals, "optim": optim}


def label(run):
    bits = run["optim"].get("bits")
    optim = run["optim"].get("name", "")
    extra = " ".join(x for x in (f"{bits}-bit" if bits else "", optim) if x)
    return f"{run['name']} ({extra})" if extra else run["name"]


def number(info, key):
    """A finite number from summary.json, else None."""
    v = info.get(key)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v) if math.isfinite(v) else None


def final_losses(run):
    """(train, val): the summary's figures, else the last logged rows."""
    info = run["summary"]
    train = number(info, "final_train_loss")
    val = number(info, "final_val_loss")
    if train is None and run["train"]:
        train = run["train"][-1]["train_loss"]
    if val is None and run["evals"]:
        val = run["evals"][-1]["val_loss"]
    return train, val


def percent(value, base):
    if value is None or base is None or base == 0:
        return "-"
    return f"{100.0 * (value - base) / base:+.2f}%"


def fmt(value, spec):
    return "-" if value is None else format(value, spec)


def wall(seconds):
    if seconds is None:
        return "-"
    m, s = divmod(int(round(seconds)), 60)
    return f"{seconds:.0f} s ({m}m{s:02d}s)"


def table(runs):
    """The Markdown table as a list of lines."""
    head = ["run", "final train loss", "final val loss", "train vs first",
            "val vs first", "optimizer state (MB)", "state vs first",
            "tokens/s", "wall time"]
    lines = ["| " + " | ".join(head) + " |",
             "| " + " | ".join(["---"] + ["---:"] * (len(head) - 1)) + " |"]
    base_train, base_val = final_losses(runs[0])
    base_state = number(runs[0]["summary"], "optimizer_state_bytes")
    for run in runs:
        info = run["summary"]
        train, val = final_losses(run)
        state = number(info, "optimizer_state_bytes")
        ratio = (f"{state / base_state:.3f}" if state is not None and
                 base_state else "-")
        cells = [label(run), fmt(train, ".4f"), fmt(val, ".4f"),
                 percent(train, base_train), percent(val, base_val),
                 fmt(None if state is None else state / MB, ".3f"), ratio,
                 fmt(number(info, "tokens_per_second"), ",.0f"),
                 wall(number(info, "wall_seconds"))]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def smooth(values, window):
    """Centered moving average over `window` rows (odd), shrinking at the
    ends; unlike an exponential average it does not lag a falling curve."""
    half = window // 2
    out = []
    for i in range(len(values)):
        part = values[max(0, i - half):i + half + 1]
        out.append(sum(part) / len(part))
    return out


def window_for(n, requested):
    """The smoothing window: `requested`, or about 1/15 of n rows."""
    w = requested if requested > 0 else max(1, n // 15)
    return w if w % 2 == 1 else w + 1


def curves(run, x_key, window):
    train_x = [r[x_key] for r in run["train"]]
    train_y = [r["train_loss"] for r in run["train"]]
    width = window_for(len(train_y), window)
    val_x = [r[x_key] for r in run["evals"]]
    val_y = [r["val_loss"] for r in run["evals"]]
    return train_x, train_y, smooth(train_y, width), val_x, val_y


COLORS = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple",
          "tab:brown", "tab:pink", "tab:gray", "tab:olive", "tab:cyan"]


def line_width(i):
    """Run i's line width: the first run widest, so that a later run on
    top of it (8 bits tracking 32 bits) leaves it visible at the edges."""
    return max(1.0, 3.2 - 0.9 * i)


def draw_relative(ax, runs, x_key, window):
    """Each later run's smoothed train and val loss as percent above the
    first run's, the first run's curves interpolated at the same x."""
    import numpy as np
    bx, _, bs, bvx, bvy = curves(runs[0], x_key, window)
    base_val = final_losses(runs[0])[1]
    ax.axhline(0.0, color=COLORS[0], linewidth=line_width(0),
               label=f"{label(runs[0])} (the reference)")
    for i, run in enumerate(runs[1:], start=1):
        color, width = COLORS[i % len(COLORS)], line_width(i)
        tx, _, ts, vx, vy = curves(run, x_key, window)
        if len(bx) >= 2 and tx:
            x = np.array(tx)
            inside = (x >= bx[0]) & (x <= bx[-1])
            ref = np.interp(x[inside], bx, bs)
            ax.plot(x[inside], 100 * (np.array(ts)[inside] - ref) / ref,
                    color=color, linewidth=width,
                    label=f"{label(run)} train")
        final = percent(final_losses(run)[1], base_val)
        x, y = np.array(vx), np.array(vy)
        if len(bvx) >= 1 and len(x):
            inside = (x >= bvx[0]) & (x <= bvx[-1])
            ref = np.interp(x[inside], bvx, bvy)
            x, y = x[inside], 100 * (y[inside] - ref) / ref
        else:
            x, y = x[:0], y[:0]
        # drawn even when empty: the legend still gives the final difference
        ax.plot(x, y, color=color, linestyle="--", marker="o",
                markersize=2 + 1.5 * width, linewidth=0.8 * width,
                label=f"{label(run)} val (final {final})")
    ax.set_ylabel(f"percent above {runs[0]['name']}")
    ax.set_title("difference to the first run (+ = higher loss)")
    ax.legend(fontsize=8, loc="best")


def draw(ax, runs, x_key, window, x_from):
    """Draws every run on `ax` for x >= x_from; returns the y values shown."""
    shown = []
    for i, run in enumerate(runs):
        color = COLORS[i % len(COLORS)]
        width = line_width(i)
        tx, ty, ts, vx, vy = curves(run, x_key, window)
        keep = [j for j, x in enumerate(tx) if x >= x_from]
        keep_v = [j for j, x in enumerate(vx) if x >= x_from]
        ax.plot([tx[j] for j in keep], [ty[j] for j in keep], color=color,
                alpha=0.18, linewidth=0.8)
        ax.plot([tx[j] for j in keep], [ts[j] for j in keep], color=color,
                linewidth=width, label=f"{label(run)} train")
        ax.plot([vx[j] for j in keep_v], [vy[j] for j in keep_v],
                color=color, linestyle="--", marker="o",
                markersize=2 + 1.5 * width, linewidth=0.8 * width,
                label=f"{label(run)} val")
        shown += [ts[j] for j in keep] + [vy[j] for j in keep_v]
    return shown


def plot(runs, out, x_key, window):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import (FixedLocator, FuncFormatter,
                                   NullFormatter, NullLocator)

    panels = 3 if len(runs) > 1 else 2
    fig, axes = plt.subplots(1, panels, figsize=(6.4 * panels, 5.2))
    full, zoom = axes[0], axes[1]
    x_max = max([r[x_key] for run in runs for r in run["train"] + run["evals"]]
                or [1.0])
    scale, xlabel = 1.0, x_key
    if x_key == "tokens" and x_max >= 1e6:
        scale, xlabel = 1e6, "tokens seen (millions)"
    elif x_key == "tokens" and x_max >= 1e4:
        scale, xlabel = 1e3, "tokens seen (thousands)"

    shown = draw(full, runs, x_key, window, float("-inf"))
    shown = [y for y in shown if y > 0]
    full.set_yscale("log")
    if shown:
        full.set_ylim(min(shown) * 0.95, max(shown) * 1.05)
    full.yaxis.set_major_locator(FixedLocator(LOG_TICKS))
    full.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{y:g}"))
    full.yaxis.set_minor_locator(NullLocator())
    full.yaxis.set_minor_formatter(NullFormatter())
    full.set_title("loss over the whole run (log scale)")

    tail = draw(zoom, runs, x_key, window, x_max / 2)
    if tail:
        lo, hi = min(tail), max(tail)
        pad = max(0.02 * lo, 0.1 * (hi - lo))
        zoom.set_ylim(lo - pad, hi + pad)
    zoom.set_title("second half of training (linear scale)")

    full.set_ylabel("cross-entropy (nats per byte)")
    zoom.set_ylabel("cross-entropy (nats per byte)")
    if panels == 3:
        draw_relative(axes[2], runs, x_key, window)
    for ax in axes:
        ax.set_xlabel(xlabel)
        ax.grid(True, which="both", alpha=0.3)
        ax.xaxis.set_major_formatter(
            FuncFormatter(lambda x, _, s=scale: f"{x / s:g}"))
    full.legend(fontsize=8, loc="upper right")
    fig.suptitle("train (smoothed, raw faint) and validation (dashed) loss; "
                 + ", ".join(label(r) for r in runs), fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv):
    p = argparse.ArgumentParser(
        description="Plot and tabulate kbit GPT runs side by side.")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--out", default="compare.png", help="PNG to write")
    p.add_argument("--x", choices=["tokens", "step"], default="tokens",
                   help="x axis (default tokens)")
    p.add_argument("--smooth", type=int, default=0, metavar="ROWS",
                   help="moving-average window of the train curve in rows "
                        "(default 0: about 1/15 of the rows)")
    args = p.parse_args(argv)
    if args.smooth < 0:
        p.error(f"expected --smooth >= 0, got {args.smooth}")
    try:
        runs = [load_run(folder) for folder in args.runs]
    except RunError as e:
        print(f"compare.py: {e}", file=sys.stderr)
        return 2
    plot(runs, args.out, args.x, args.smooth)
    print("\n".join(table(runs)))
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
