"""Gradient descent: its rate against the conditioning of a quadratic, and the learning-rate range test.

Part 1, quadratics with a set spectrum. f(x) = ½ xᵀAx with A = Q diag(λ) Qᵀ (d = 50, Q a seeded random
rotation, λ spaced geometrically from μ = 1 to L = κ), written as least squares, f(x) = ‖Xx‖² / 2n with
X = √n U diag(√λ) Qᵀ (n = 1000 rows, U with orthonormal columns), so that minibatch SGD has rows to sample.
The minimum is x* = 0, so the error ‖x_k‖ has no rounding floor and rates are measured far down (to 1e-30).
From x₀ (a seeded unit vector), for κ = 10, 100, 1000:

* gradient descent at the optimal constant step η = 2/(L + μ): theory (e.g. Nesterov 2004, Thm 2.1.15; Polyak
  1987) says ‖x_k‖ contracts by (κ − 1)/(κ + 1) per step, exactly so along the extreme eigenvectors;
* heavy-ball momentum (Polyak 1964) at its optimal α = 4/(√L + √μ)², β = ((√κ − 1)/(√κ + 1))²: by
  (√κ − 1)/(√κ + 1) per step, times a factor linear in k (the extreme eigenvalues give a double root);
* a step above 2/L diverges: along the top eigenvector the error is multiplied by |1 − ηL| > 1 each step;
* Adam (full batch) and minibatch SGD (batch 32), each at the best step of a small grid, on the same problems.

The measured rate is exp(slope) of a least-squares line through log ‖x_k‖ over the steps where the error has
fallen between 1e-5 and 1e-30 of its start (quick: 1e-3 to 1e-12), past the transient. The comparison with
theory is on −log(rate), the e-folds gained per step, which is what the number of steps scales with
(a rate of 0.998 against 0.996 is "within 0.2%" but twice the steps).

The optimizers are torch's (torch.optim.SGD with momentum β and dampening 0 is exactly Polyak's heavy ball:
x_{k+1} = x_k − α∇f(x_k) + β(x_k − x_{k−1})); the gradient Ax is computed directly.

Part 2, the learning-rate range test (`dlforge lr-find`, `dlforge.labs.lr_find`) on a `builtin:digits` spec
(resnet_small, AdamW, cosine schedule): its suggested rate is trained like every rate of a grid, through the
same Trainer, and the test accuracies are compared.
"""

from __future__ import annotations

import logging
import math
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dlforge.devices import torch_threads
from dlforge.registry import LABS

log = logging.getLogger("dlforge")

DIM, ROWS, SGD_BATCH = 50, 1000, 32
RATE_TOLERANCE = 0.10  # measured −log(rate) within 10% of theory
ACCURACY_MARGIN = 0.01  # the suggested rate within 1 point of the grid's best test accuracy


# ---------------------------------------------------------------- the quadratics


def quadratic(kappa: float, seed: int) -> dict[str, torch.Tensor]:
    """A (d, d) with eigenvalues geomspace(1, κ, d) in a random basis, and the rows X (n, d) with XᵀX/n = A."""
    from scipy.stats import ortho_group

    eigenvalues = np.geomspace(1.0, kappa, DIM)
    q = ortho_group.rvs(DIM, random_state=seed)  # (d, d) rotation
    u, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((ROWS, DIM)))  # (n, d), orthonormal columns
    x_rows = math.sqrt(ROWS) * u * np.sqrt(eigenvalues) @ q.T  # (n, d)
    a = q * eigenvalues @ q.T
    return {"A": torch.tensor(a), "X": torch.tensor(x_rows), "eigenvalues": torch.tensor(eigenvalues)}


def start_point(seed: int) -> torch.Tensor:
    x = torch.tensor(np.random.default_rng(seed + 1).standard_normal(DIM))
    return x / x.norm()


def run_optimizer(problem: dict[str, torch.Tensor], x0: torch.Tensor, make: Any, steps: int,
                  stochastic: bool = False, seed: int = 0, stop_below: float = 1e-300) -> np.ndarray:
    """‖x_k‖ for k = 0…steps (shorter if it falls below `stop_below` or overflows) under a torch optimizer
    `make(params)`; the gradient is Ax, or a minibatch's X_bᵀX_b x / b."""
    x = x0.clone().requires_grad_(True)
    optimizer = make([x])
    a, rows = problem["A"], problem["X"]
    generator = torch.Generator().manual_seed(seed)
    errors = [float(x.detach().norm())]
    for _ in range(steps):
        with torch.no_grad():
            if stochastic:
                batch = rows[torch.randint(0, ROWS, (SGD_BATCH,), generator=generator)]  # (b, d)
                x.grad = batch.T @ (batch @ x) / SGD_BATCH
            else:
                x.grad = a @ x
        optimizer.step()
        errors.append(float(x.detach().norm()))
        if not errors[-1] > stop_below or not math.isfinite(errors[-1]) or errors[-1] > 1e30:
            break
    return np.array(errors)


def measured_rate(errors: np.ndarray, high: float, low: float) -> float:
    """exp(slope) of log ‖x_k‖ against k over the steps where ‖x_k‖/‖x_0‖ lies between `low` and `high`."""
    ratio = errors / errors[0]
    steps = np.flatnonzero((ratio <= high) & (ratio >= low))
    if len(steps) < 10:
        raise ValueError(f"too few steps ({len(steps)}) between {high:g} and {low:g} to measure a rate")
    slope = np.polyfit(steps, np.log(errors[steps]), 1)[0]
    return float(math.exp(slope))


def steps_to(rate: float, level: float) -> int:
    """Steps for rate^k to reach `level`, with a margin."""
    return math.ceil(1.3 * math.log(level) / math.log(rate)) + 50


def contraction(kappa: float, seed: int, window: tuple[float, float], other_steps: int) -> dict[str, Any]:
    """GD and heavy ball at their optimal steps, a diverging and a converging GD near 2/L, Adam and SGD:
    curves, measured rates, theory."""
    problem, x0 = quadratic(kappa, seed), start_point(seed)
    L, mu = kappa, 1.0
    gd_theory = (kappa - 1) / (kappa + 1)
    hb_theory = (math.sqrt(kappa) - 1) / (math.sqrt(kappa) + 1)
    high, low = window
    gd_eta = 2 / (L + mu)
    hb_alpha, hb_beta = 4 / (math.sqrt(L) + math.sqrt(mu)) ** 2, hb_theory**2
    gd = run_optimizer(problem, x0, lambda p: torch.optim.SGD(p, lr=gd_eta), steps_to(gd_theory, low),
                       stop_below=low * 1e-3)
    hb = run_optimizer(problem, x0, lambda p: torch.optim.SGD(p, lr=hb_alpha, momentum=hb_beta),
                       steps_to(hb_theory, low), stop_below=low * 1e-3)
    rows = {"gd": {"theory": gd_theory, "measured": measured_rate(gd, high, low), "step": gd_eta},
            "heavy_ball": {"theory": hb_theory, "measured": measured_rate(hb, high, low), "alpha": hb_alpha,
                           "beta": hb_beta}}
    for row in rows.values():
        row["efold_ratio"] = math.log(row["measured"]) / math.log(row["theory"])  # measured / theory
        row["within_tolerance"] = abs(row["efold_ratio"] - 1) <= RATE_TOLERANCE
    # Near the stability limit 2/L: each eigen-direction λ is multiplied by |1 − ηλ| per step; the error's
    # asymptotic factor is the largest of them, |1 − ηL| (> 1 above 2/L) or 1 − ημ.
    near = {}
    for factor in (1.9, 2.1):
        eta = factor / L
        errors = run_optimizer(problem, x0, lambda p, eta=eta: torch.optim.SGD(p, lr=eta), 200)
        late = errors[100:]  # past the transient
        near[f"{factor}/L"] = {"eta": eta, "curve": errors.tolist(), "top_factor": abs(1 - eta * L),
                               "theory_factor": max(abs(1 - eta * L), abs(1 - eta * mu)),
                               "measured_factor": float((late[-1] / late[0]) ** (1 / (len(late) - 1))),
                               "diverged": bool(errors[-1] > errors[0])}
    # Adam (full batch) and minibatch SGD, each at the best of a small grid, for as many steps as GD took (at most
    # `other_steps`).
    budget = min(len(gd) - 1, other_steps)
    others = {}
    for name, grid, make, stochastic in (
            ("adam", (1e-3, 1e-2, 1e-1), lambda lr: (lambda p: torch.optim.Adam(p, lr=lr)), False),
            ("sgd", (0.1 / L, 0.3 / L, 1 / L), lambda lr: (lambda p: torch.optim.SGD(p, lr=lr)), True)):
        tried = {lr: run_optimizer(problem, x0, make(lr), budget, stochastic, seed, stop_below=low * 1e-3)
                 for lr in grid}
        best = min(tried, key=lambda lr: tried[lr][-1] if math.isfinite(tried[lr][-1]) else math.inf)
        others[name] = {"lr": best, "grid": list(grid), "final_error": float(tried[best][-1]),
                        "steps": len(tried[best]) - 1, "curve": tried[best].tolist()}
    return {"kappa": kappa, "L": L, "mu": mu, "rates": rows, "near_2_over_L": near, "others": others,
            "curves": {"gd": gd.tolist(), "heavy_ball": hb.tolist()}}


# ---------------------------------------------------------------- the range test on digits


def digits_spec(lr: float, config: dict[str, Any], seed: int, scheduler: str = "cosine") -> Any:
    """The lab's digits spec at learning rate `lr` (with `scheduler: onecycle`, the cycle's maximum)."""
    import dlforge.tasks  # noqa: F401  (registers the tasks)
    from dlforge.spec import validate_spec

    return validate_spec({
        "name": "lab-lr-digits", "task": "image_classification",
        "data": {"source": "builtin:digits", "split": {"val": 0.1, "test": 0.2, "seed": 0}},
        "model": {"name": "resnet_small", "kwargs": {"width": config["width"]}},
        "train": {"epochs": config["epochs"], "batch_size": 64, "seed": seed, "scheduler": scheduler,
                  "optimizer": {"name": "adamw", "lr": lr, "weight_decay": 1e-4}, "checkpoint": False}})


def range_test_vs_grid(config: dict[str, Any], seed: int, out: Path) -> dict[str, Any]:
    """lr-find's suggestion on the digits spec, and the test accuracy of training at it and at each grid rate."""
    from dlforge.labs._training import fit
    from dlforge.labs.lr_find import lr_range_test

    found = lr_range_test(digits_spec(1e-3, config, seed), out, steps=config["range_steps"])
    rates = sorted({*config["grid"], found["lr"]})
    trained = []
    for lr in rates:
        result = fit(digits_spec(lr, config, seed))
        trained.append({"lr": lr, "test_accuracy": result.accuracy, "suggested": lr == found["lr"],
                        "in_grid": lr in config["grid"], "train_time_s": round(result.seconds, 1)})
        log.info("gradient-descent: digits at lr %.3g: test accuracy %.4f (%.0f s)", lr, result.accuracy,
                 result.seconds)
    best = max((t for t in trained if t["in_grid"]), key=lambda t: t["test_accuracy"])
    suggested = next(t for t in trained if t["suggested"])
    onecycle = None
    if config["onecycle"]:  # the one-cycle maximum, trained with the one-cycle schedule
        result = fit(digits_spec(found["onecycle_max_lr"], config, seed, scheduler="onecycle"))
        onecycle = {"lr": found["onecycle_max_lr"], "test_accuracy": result.accuracy,
                    "train_time_s": round(result.seconds, 1)}
    return {"range_test": {k: v for k, v in found.items() if k != "curve"}, "curve": found["curve"],
            "trained": trained, "best_grid": best, "suggested": suggested, "onecycle": onecycle,
            "gap": best["test_accuracy"] - suggested["test_accuracy"],
            "within_margin": best["test_accuracy"] - suggested["test_accuracy"] <= ACCURACY_MARGIN}


# ---------------------------------------------------------------- the lab


@LABS.register("gradient-descent")
def gradient_descent(out: Path, quick: bool = False, seed: int = 0) -> tuple[dict[str, Any], str]:
    """Gradient descent against conditioning: measured contraction vs (κ−1)/(κ+1), heavy ball vs (√κ−1)/(√κ+1), divergence above 2/L, Adam and SGD; the LR range test's suggestion against a grid on digits."""  # noqa: E501
    config: dict[str, Any] = {
        "seed": seed, "kappas": [10, 100, 1000], "dim": DIM, "rows": ROWS, "sgd_batch": SGD_BATCH,
        "window": [1e-5, 1e-30], "other_steps": 50_000, "rate_tolerance": RATE_TOLERANCE,
        "width": 16, "epochs": 12, "grid": [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1], "range_steps": 200,
        "onecycle": True,
        "accuracy_margin": ACCURACY_MARGIN}
    if quick:  # the rate claims in full; the range test against a shorter grid and fewer epochs
        config.update(window=[1e-3, 1e-12], other_steps=2000, width=8, epochs=5, grid=[1e-3, 1e-2, 1e-1],
                      range_steps=100, onecycle=False)
    with torch_threads(1):  # small problems: a second thread only waits on the first (see vanishing-gradients)
        return _experiment(config, Path(out))


def _experiment(config: dict[str, Any], out: Path) -> tuple[dict[str, Any], str]:
    seed = config["seed"]
    quadratics = []
    for kappa in config["kappas"]:
        log.info("gradient-descent: quadratic with κ = %g", kappa)
        quadratics.append(contraction(kappa, seed, tuple(config["window"]), config["other_steps"]))
    with tempfile.TemporaryDirectory(prefix="dlforge-lr-") as scratch:
        digits = range_test_vs_grid(config, seed, Path(scratch))
    _plot_quadratics(quadratics, out / "contraction.png")
    _plot_range_test(digits, out / "lr_find.png")
    headline: dict[str, Any] = {}
    for q in quadratics:
        for name, r in q["rates"].items():
            headline[f"κ={q['kappa']:g} {name} rate (theory)"] = f"{r['measured']:.5f} ({r['theory']:.5f})"
    headline["lr-find suggestion"] = f"{digits['range_test']['lr']:.3g}"
    headline["test accuracy: suggested / best of grid"] = (f"{digits['suggested']['test_accuracy']:.4f} / "
                                                           f"{digits['best_grid']['test_accuracy']:.4f} at lr "
                                                           f"{digits['best_grid']['lr']:g}")
    results = {"config": config, "quadratics": quadratics, "digits": digits, "headline": headline,
               "passed": {"rates": all(r["within_tolerance"] for q in quadratics for r in q["rates"].values()),
                          "divergence": all(q["near_2_over_L"]["2.1/L"]["diverged"]
                                            and not q["near_2_over_L"]["1.9/L"]["diverged"] for q in quadratics),
                          "lr_find": digits["within_margin"]},
               "files": ["contraction.png", "lr_find.png", "summary.md", "results.json"]}
    return results, _summary(results)


# ---------------------------------------------------------------- figures and summary


def _plot_quadratics(quadratics: list[dict[str, Any]], path: Path) -> None:
    from dlforge.plots import plt, save

    fig, axes = plt.subplots(2, len(quadratics), figsize=(5 * len(quadratics), 8), squeeze=False)
    for ax, near, q in zip(axes[0], axes[1], quadratics, strict=True):
        styles = {"gd": ("C0", "GD, η = 2/(L+μ)"), "heavy_ball": ("C1", "heavy ball, optimal α, β")}
        for name, (colour, label) in styles.items():
            curve = np.array(q["curves"][name])
            rate = q["rates"][name]
            ax.semilogy(curve / curve[0], color=colour, lw=1.5, label=f"{label}: {rate['measured']:.4f}")
            ax.semilogy(rate["theory"] ** np.arange(len(curve)), color=colour, ls=":", lw=1,
                        label=f"theory {rate['theory']:.4f}ᵏ")
        for name, colour in (("adam", "C2"), ("sgd", "C4")):
            o = q["others"][name]
            curve = np.array(o["curve"])
            ax.semilogy(curve / curve[0], color=colour, lw=1, alpha=0.8,
                        label=f"{'Adam (full batch)' if name == 'adam' else f'SGD (batch {SGD_BATCH})'}, "
                              f"lr {o['lr']:.2g}")
        ax.set_ylim(1e-32, 10)
        ax.set_xlabel("step k")
        ax.set_ylabel("‖x_k − x*‖ / ‖x_0 − x*‖")
        ax.set_title(f"κ = {q['kappa']:g}")
        ax.legend(fontsize=6)
        for key, n in q["near_2_over_L"].items():
            near.semilogy(n["curve"], label=f"GD, η = {key}: ×{n['measured_factor']:.4f}/step "
                                             f"(theory max |1 − ηλ| = {n['theory_factor']:.4f})")
        near.set_xlabel("step k")
        near.set_ylabel("‖x_k − x*‖")
        near.set_title(f"κ = {q['kappa']:g}: steps just below and above 2/L")
        near.legend(fontsize=7)
    fig.tight_layout()
    save(fig, path)


def _plot_range_test(digits: dict[str, Any], path: Path) -> None:
    from dlforge.plots import plt, save

    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4))
    curve, found = digits["curve"], digits["range_test"]
    a.plot(curve["lr"], curve["loss"], color="C0", alpha=0.3, lw=1, label="batch loss")
    a.plot(curve["lr"], curve["smoothed"], color="C0", lw=2, label="smoothed loss")
    a.axvline(found["lr"], color="C2", ls="--", label=f"suggested {found['lr']:.2g}")
    a.axvline(found["onecycle_max_lr"], color="C1", ls="--", label=f"one-cycle max {found['onecycle_max_lr']:.2g}")
    a.set_xscale("log")
    a.set_ylim(0, 1.3 * max(curve["smoothed"][0], 1e-3))
    a.set_xlabel("learning rate")
    a.set_ylabel("training loss")
    a.set_title("range test on digits (Smith 2017)")
    a.legend(fontsize=7)
    grid = [t for t in digits["trained"] if t["in_grid"]]
    b.semilogx([t["lr"] for t in grid], [t["test_accuracy"] for t in grid], "o-", label="grid")
    s = digits["suggested"]
    b.semilogx([s["lr"]], [s["test_accuracy"]], "*", ms=14, color="C2", label=f"suggested {s['lr']:.2g}")
    b.axhline(digits["best_grid"]["test_accuracy"] - ACCURACY_MARGIN, color="grey", ls=":",
              label="best of grid − 1 point")
    b.set_xlabel("learning rate (AdamW, cosine)")
    b.set_ylabel("test accuracy")
    b.set_title("trained at each rate")
    b.legend(fontsize=7)
    save(fig, path)


def _summary(results: dict[str, Any]) -> str:
    c, digits = results["config"], results["digits"]
    lines = ["# Gradient descent", "",
             f"Quadratics ½ xᵀAx in d = {c['dim']}, eigenvalues from μ = 1 to L = κ (geometric), a random basis "
             f"(seed {c['seed']}); the rate is measured where ‖x_k‖/‖x_0‖ falls from {c['window'][0]:g} to "
             f"{c['window'][1]:g}, and compared on −log(rate) (steps per e-fold) with a tolerance of "
             f"{RATE_TOLERANCE:.0%}.", "",
             "| κ | method | theory (paper) | measured | −log ratio (measured / theory) |", "|---|---|---|---|---|"]
    for q in results["quadratics"]:
        for name, paper in (("gd", "(κ−1)/(κ+1), GD at η = 2/(L+μ)"),
                            ("heavy_ball", "(√κ−1)/(√κ+1), Polyak 1964")):
            r = q["rates"][name]
            lines.append(f"| {q['kappa']:g} | {name.replace('_', ' ')} | {r['theory']:.5f} — {paper} | "
                         f"{r['measured']:.5f} | {r['efold_ratio']:.3f}{'' if r['within_tolerance'] else ' ✗'} |")
    lines += ["", "Steps just below and above the stability limit 2/L: the error's factor per step over steps "
              "100–200, against theory, max over the eigenvalues λ of |1 − ηλ| (|1 − ηL| = 1.1 above the limit, "
              "1 − ημ below it):", "",
              "| κ | η = 1.9/L: measured (theory) | η = 2.1/L: measured (theory) |", "|---|---|---|"]
    for q in results["quadratics"]:
        cells = []
        for key in ("1.9/L", "2.1/L"):
            n = q["near_2_over_L"][key]
            cells.append(f"×{n['measured_factor']:.4f} (×{n['theory_factor']:.4f}), "
                         f"{'diverges' if n['diverged'] else 'converges'}")
        lines.append(f"| {q['kappa']:g} | {cells[0]} | {cells[1]} |")
    lines += ["", "Adam (full batch) and minibatch SGD (batch 32 rows of 1000), each at the best step of a small "
              f"grid, run for as many steps as GD needed (at most {c['other_steps']}; an SGD step reads 32/1000 of the "
              "rows a GD step reads). Error ‖x_k‖/‖x_0‖ after those steps:", "",
              "| κ | steps | GD | heavy ball | Adam (lr) | SGD (lr) |", "|---|---|---|---|---|---|"]
    for q in results["quadratics"]:
        a, s = q["others"]["adam"], q["others"]["sgd"]
        k = a["steps"]
        gd, hb = q["curves"]["gd"], q["curves"]["heavy_ball"]
        lines.append(f"| {q['kappa']:g} | {k} | {gd[min(k, len(gd) - 1)]:.1e} | {hb[min(k, len(hb) - 1)]:.1e} | "
                     f"{a['final_error']:.1e} ({a['lr']:g}) | {s['final_error']:.1e} ({s['lr']:.2g}) |")
    lines += ["", "Neither Adam nor SGD has a rate set by κ alone: Adam rescales each coordinate of the gradient "
              "(in a basis that is not the eigenbasis here) and takes steps of about lr whatever the gradient's "
              "size; SGD converges linearly only because the minimum fits every row (interpolation), at a pace "
              "its sampling noise limits.", "",
              "## The learning-rate range test (Smith 2017)", "",
              f"`dlforge lr-find` on a builtin:digits spec (resnet_small width {c['width']}, AdamW, batch 64): the "
              f"rate grown from {digits['range_test']['start']:g} to {digits['range_test']['end']:g} over "
              f"{digits['range_test']['steps']} steps ({digits['range_test']['steps_taken']} taken, "
              f"{digits['range_test']['stopped']}). Suggested lr {digits['range_test']['lr']:.3g} (steepest "
              f"descent of the smoothed loss); one-cycle maximum {digits['range_test']['onecycle_max_lr']:.3g}. "
              f"Each rate then trained for {c['epochs']} epochs (cosine schedule) through the same Trainer:", "",
              "| lr | test accuracy |", "|---|---|"]
    for t in digits["trained"]:
        mark = " (suggested)" if t["suggested"] else ""
        lines.append(f"| {t['lr']:.3g}{mark} | {t['test_accuracy']:.4f} |")
    lines += ["", f"Claim (issue): the suggested rate trains within {ACCURACY_MARGIN * 100:.0f} point of the best of "
              f"the grid. Measured: {digits['suggested']['test_accuracy']:.4f} against "
              f"{digits['best_grid']['test_accuracy']:.4f} (lr {digits['best_grid']['lr']:g}), a gap of "
              f"{digits['gap'] * 100:.2f} points: {'holds' if digits['within_margin'] else 'does not hold'}."]
    if digits["onecycle"]:
        o = digits["onecycle"]
        lines.append(f"The one-cycle maximum (a tenth of the rate at the loss minimum), trained with "
                     f"`scheduler: onecycle` for the same epochs: test accuracy {o['test_accuracy']:.4f}.")
    lines += ["",
              "See contraction.png (error curves with the theoretical lines; steps around 2/L) and lr_find.png.", ""]
    return "\n".join(lines)
