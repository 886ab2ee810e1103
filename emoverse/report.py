"""Charts a person would rather look at than read."""

from pathlib import Path

from emoverse.atomic import atomic_path
from emoverse.emotions import LABELS


def pyplot():  # matplotlib.pyplot, imported only when a chart is drawn (slow import)
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and workers
    import matplotlib.pyplot as plt

    return plt


def plot_label_distribution(counts: dict[str, int], path: Path) -> Path:
    """A horizontal bar chart of poems per label, largest on top."""
    plt = pyplot()
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
    plt = pyplot()
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


def plot_confusion_matrix(
    matrix: list[list[float]], rows: list[str], cols: list[str], path: Path
) -> Path:
    """A heatmap of shares (rows: models, columns: labels of their poems), each cell annotated,
    written to a temporary sibling and renamed into place."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(1.0 + 0.62 * len(cols), 1.0 + 0.45 * len(rows)), dpi=100)
    image = ax.imshow(matrix, cmap="Blues", vmin=0.0, vmax=1.0, aspect="auto")
    for i, row in enumerate(matrix):
        for j, value in enumerate(row):
            ax.text(
                j,
                i,
                f"{value:.2f}",
                ha="center",
                va="center",
                fontsize=7,
                color="white" if value > 0.5 else "black",  # readable on dark cells
            )
    ax.set_xticks(range(len(cols)), cols, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    ax.set_xlabel("label of the generated poems")
    ax.set_ylabel("model")
    ax.set_title("Emotion of generated poems, per model")
    fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02, label="share")
    fig.tight_layout()
    try:
        with atomic_path(Path(path)) as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)
    return Path(path)
