"""Charts a person would rather look at than read."""

from pathlib import Path

from emoverse.emotions import LABELS


def _pyplot():  # matplotlib.pyplot, imported only when a chart is drawn (slow import)
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and workers
    import matplotlib.pyplot as plt

    return plt


def plot_label_distribution(counts: dict[str, int], path: Path) -> Path:
    """A horizontal bar chart of poems per label, largest on top."""
    plt = _pyplot()
    labels = sorted(LABELS, key=lambda label: counts.get(label, 0))
    values = [counts.get(label, 0) for label in labels]
    total = max(1, sum(values))
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    bars = ax.barh(labels, values, color="#5b7aa9")
    for bar, value in zip(bars, values, strict=True):
        ax.text(
            bar.get_width(),
            bar.get_y() + bar.get_height() / 2,
            f" {value} ({value / total:.0%})",
            va="center",
            fontsize=8,
        )
    ax.set_xlabel("poems")
    ax.set_xlim(0, max([*values, 1]) * 1.25)
    ax.set_title("NRC emotion label per poem")
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
    return path


def plot_loss_curves(histories: dict[str, dict[str, list]], path: Path) -> Path:
    """One panel of training (thin) and validation (dots) loss per model."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    for name, history in histories.items():
        if history["train"]:
            steps, losses = zip(*history["train"], strict=True)
            (line,) = ax.plot(steps, losses, linewidth=0.8, alpha=0.7, label=f"{name} train")
            if history["validation"]:
                vs, vl = zip(*history["validation"], strict=True)
                ax.plot(vs, vl, "o--", color=line.get_color(), label=f"{name} validation")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (nats/token)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
    return path
