"""Training curves as PNG (matplotlib, no screen needed)."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_curves(run):
    """RUN/curves.png: train/validation loss and validation macro-F1 per epoch, one line per fold
    (``run``: a train.run.Run)."""
    fig, (ax_loss, ax_f1) = plt.subplots(1, 2, figsize=(11, 4.2))
    for k in range(run.config.folds):
        epochs = run.history(k)["epochs"]
        if not epochs:
            continue
        x = [e["epoch"] + 1 for e in epochs]
        color = f"C{k}"
        ax_loss.plot(x, [e["train_loss"] for e in epochs], color=color, label=f"fold {k} train")
        ax_loss.plot(x, [e["val_loss"] for e in epochs], color=color, ls="--", label=f"fold {k} val")
        ax_f1.plot(x, [e["macro_f1_tuned"] for e in epochs], color=color, label=f"fold {k} tuned")
        ax_f1.plot(x, [e["macro_f1_0.5"] for e in epochs], color=color, ls=":", label=f"fold {k} at 0.5")
    ax_loss.set(title="Loss per epoch", xlabel="epoch", ylabel="loss")
    ax_f1.set(title="Validation macro-F1 per epoch", xlabel="epoch", ylabel="macro-F1", ylim=(0, 1))
    for ax in (ax_loss, ax_f1):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    out = run.file("curves.png")
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
