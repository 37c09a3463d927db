"""Backpropagation from scratch: the numpy engine of `dlforge.labs.autodiff_engine` against torch.autograd.

Measured, all in float64:

* every operation's gradient against torch.autograd's for the same inputs and the same upstream gradient
  (max |ours − torch| / max |torch|, per input);
* whole networks (an MLP with tanh, a CNN with two convolutions and relu) on `builtin:digits`: every parameter's
  gradient against torch's, and against central finite differences (f(θ + h) − f(θ − h)) / 2h of the engine's
  own loss on sampled coordinates;
* training: the same MLP, the same initial weights, the same batches, plain SGD, once with the engine and once
  with torch (nn.Sequential + torch.optim.SGD): test accuracy and how far the two trajectories drift apart;
* the cheap gradient principle (Griewank & Walther 2008, Evaluating Derivatives): reverse mode costs a small
  constant times the function, whatever the number of parameters. Measured as the time of forward + backward
  over the time of the forward pass alone, best of repeated runs, for the engine and for torch.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dlforge.devices import torch_threads
from dlforge.labs import autodiff_engine as ad
from dlforge.labs._digits import Digits, load_digits
from dlforge.registry import LABS

log = logging.getLogger("dlforge")

PARITY_TOLERANCE = 1e-10  # relative, engine vs torch.autograd in float64
FD_TOLERANCE = 1e-6  # relative, engine vs central finite differences
GRIEWANK_OMEGA = (3, 4)  # the constant their cost model bounds the gradient-to-function cost ratio by

Params = dict[str, np.ndarray]


# ---------------------------------------------------------------- one operation at a time


def _cases(rng: np.random.Generator) -> list[tuple[str, list[np.ndarray], Callable, Callable]]:
    """(name, inputs, engine op, torch op) for every operation, with shapes that exercise broadcasting,
    padding and stride."""
    r = rng.standard_normal
    conv = lambda s, p: (lambda x, w: ad.conv2d(x, w, s, p), lambda x, w: F.conv2d(x, w, stride=s, padding=p))  # noqa: E731
    targets = rng.integers(0, 5, size=8)
    return [
        ("add, (4,5) + (5,)", [r((4, 5)), r(5)], ad.add, torch.add),
        ("add, (4,5) + (4,1)", [r((4, 5)), r((4, 1))], ad.add, torch.add),
        ("mul, (4,5) ⊙ (1,5)", [r((4, 5)), r((1, 5))], ad.mul, torch.mul),
        ("matmul, (6,4) @ (4,3)", [r((6, 4)), r((4, 3))], ad.matmul, torch.matmul),
        ("relu", [r((5, 7))], ad.relu, torch.relu),
        ("tanh", [r((5, 7))], ad.tanh, torch.tanh),
        ("reshape, (2,3,4) -> (6,4)", [r((2, 3, 4))], lambda x: ad.reshape(x, 6, 4), lambda x: x.reshape(6, 4)),
        ("sum", [r((3, 4))], ad.sum_, torch.sum),
        ("conv2d, 3x3, stride 1, padding 1", [r((2, 3, 6, 6)), r((4, 3, 3, 3))], *conv(1, 1)),
        ("conv2d, 3x3, stride 2, padding 0", [r((2, 2, 7, 7)), r((3, 2, 3, 3))], *conv(2, 0)),
        ("cross-entropy (log-softmax + NLL)", [r((8, 5)) * 3],
         lambda z: ad.cross_entropy(z, targets), lambda z: F.cross_entropy(z, torch.as_tensor(targets))),
    ]


def relative_error(ours: np.ndarray, reference: np.ndarray) -> float:
    """max |ours − reference| / max |reference|."""
    return float(np.abs(ours - reference).max() / max(np.abs(reference).max(), 1e-300))


def op_parity(seed: int) -> list[dict[str, Any]]:
    """Per operation: the largest relative error of the inputs' gradients against torch.autograd, for a random
    upstream gradient (so that every output entry weighs differently)."""
    rng = np.random.default_rng(seed)
    rows = []
    for name, inputs, ours, theirs in _cases(rng):
        mine = [ad.Tensor(x) for x in inputs]
        out = ours(*mine)
        upstream = rng.standard_normal(out.shape)
        out.backward(upstream)
        ref = [torch.tensor(x, requires_grad=True) for x in inputs]
        theirs(*ref).backward(torch.as_tensor(upstream))
        value_error = relative_error(out.data, theirs(*[t.detach() for t in ref]).numpy())
        grad_error = max(relative_error(m.grad, t.grad.numpy()) for m, t in zip(mine, ref, strict=True))
        rows.append({"op": name, "output_rel_error": value_error, "grad_rel_error": grad_error})
    return rows


# ---------------------------------------------------------------- two networks, written twice


def init_params(kind: str, hidden: int, rng: np.random.Generator) -> Params:
    """Weights drawn N(0, 1/fan_in), biases N(0, 0.1²). mlp: 64 -> hidden (tanh) -> 10; cnn: (1, 8, 8) -> conv
    3x3 to 8 channels (relu) -> conv 3x3 stride 2 to 16 channels, 4x4 (relu) -> 256 -> 10.

    Not zero biases: a blank patch of a digit (and the zero padding) would put a relu exactly at its kink,
    where the derivative is a convention (torch's and ours: 0) and central differences see ½."""
    def normal(*shape: int, fan_in: int) -> np.ndarray:
        return rng.standard_normal(shape) / np.sqrt(fan_in)
    if kind == "mlp":
        return {"w1": normal(64, hidden, fan_in=64), "b1": normal(hidden, fan_in=100),
                "w2": normal(hidden, 10, fan_in=hidden), "b2": normal(10, fan_in=100)}
    return {"k1": normal(8, 1, 3, 3, fan_in=9), "c1": normal(1, 8, 1, 1, fan_in=100),
            "k2": normal(16, 8, 3, 3, fan_in=72), "c2": normal(1, 16, 1, 1, fan_in=100),
            "w3": normal(256, 10, fan_in=256), "b3": normal(10, fan_in=100)}


def engine_loss(kind: str, p: dict[str, ad.Tensor], x: np.ndarray, y: np.ndarray) -> ad.Tensor:
    """The network's mean cross-entropy on (x (B, 64), y (B,)), recorded by the engine."""
    if kind == "mlp":
        h = ad.tanh(ad.Tensor(x) @ p["w1"] + p["b1"])  # (B, hidden)
        return ad.cross_entropy(h @ p["w2"] + p["b2"], y)
    h = ad.relu(ad.conv2d(ad.Tensor(x.reshape(-1, 1, 8, 8)), p["k1"], 1, 1) + p["c1"])  # (B, 8, 8, 8)
    h = ad.relu(ad.conv2d(h, p["k2"], 2, 1) + p["c2"])  # (B, 16, 4, 4)
    return ad.cross_entropy(ad.reshape(h, len(x), 256) @ p["w3"] + p["b3"], y)


def torch_model(kind: str, params: Params) -> nn.Module:
    """The same network as torch modules (float64), loaded with `params` (nn.Linear keeps its weight (out, in))."""
    if kind == "mlp":
        model = nn.Sequential(nn.Linear(64, params["w1"].shape[1]), nn.Tanh(), nn.Linear(params["w2"].shape[0], 10))
        weights = [params["w1"].T, params["b1"], params["w2"].T, params["b2"]]
    else:
        model = nn.Sequential(nn.Unflatten(1, (1, 8, 8)), nn.Conv2d(1, 8, 3, 1, 1), nn.ReLU(),
                              nn.Conv2d(8, 16, 3, 2, 1), nn.ReLU(), nn.Flatten(), nn.Linear(256, 10))
        weights = [params["k1"], params["c1"].ravel(), params["k2"], params["c2"].ravel(), params["w3"].T,
                   params["b3"]]
    model = model.double()
    with torch.no_grad():
        for p, w in zip(model.parameters(), weights, strict=True):
            p.copy_(torch.as_tensor(np.ascontiguousarray(w)))
    return model


def torch_grads(kind: str, model: nn.Module, x: np.ndarray, y: np.ndarray) -> tuple[float, Params]:
    """torch's loss and gradients, renamed and reshaped to the engine's parameters."""
    model.zero_grad()
    loss = F.cross_entropy(model(torch.as_tensor(x)), torch.as_tensor(y))
    loss.backward()
    names = ["w1", "b1", "w2", "b2"] if kind == "mlp" else ["k1", "c1", "k2", "c2", "w3", "b3"]
    grads = {}
    for name, p in zip(names, model.parameters(), strict=True):
        g = p.grad.numpy()
        grads[name] = g.T if name.startswith("w") else g.reshape(1, -1, 1, 1) if name.startswith("c") else g
    return loss.item(), grads


def engine_grads(kind: str, params: Params, x: np.ndarray, y: np.ndarray) -> tuple[float, Params]:
    tensors = {k: ad.Tensor(v) for k, v in params.items()}
    loss = engine_loss(kind, tensors, x, y)
    loss.backward()
    return float(loss.data), {k: t.grad for k, t in tensors.items()}


def network_parity(kind: str, params: Params, x: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """Loss and every parameter's gradient, engine against torch.autograd (relative errors)."""
    loss, grads = engine_grads(kind, params, x, y)
    torch_loss, reference = torch_grads(kind, torch_model(kind, params), x, y)
    per_param = {k: relative_error(grads[k], reference[k]) for k in params}
    return {"network": kind, "parameters": int(sum(v.size for v in params.values())), "batch": len(x),
            "loss_rel_error": abs(loss - torch_loss) / abs(torch_loss), "grad_rel_error": per_param,
            "max_grad_rel_error": max(per_param.values())}


def finite_differences(kind: str, params: Params, x: np.ndarray, y: np.ndarray, per_param: int, h: float,
                       rng: np.random.Generator) -> dict[str, Any]:
    """Central differences (L(θ + h e_i) − L(θ − h e_i)) / 2h on `per_param` random coordinates of each
    parameter against the engine's gradient there: ‖fd − grad‖ / ‖grad‖ per parameter. Their error is
    O(h²) from truncation plus O(ε·L/h) from rounding, about 1e-9 relative at h = 1e-6 in float64, unless a
    step crosses a relu's kink: then the quotient averages two slopes. (With h = 1e-5 the CNN's first-layer
    bias was off by 2e-4: one of its pre-activations on these 64 digits lies 1.1e-5 from 0.)"""
    _, grads = engine_grads(kind, params, x, y)

    def loss_at(name: str, index: tuple[int, ...], delta: float) -> float:
        shifted = {k: v.copy() for k, v in params.items()}
        shifted[name][index] += delta
        return float(engine_loss(kind, {k: ad.Tensor(v) for k, v in shifted.items()}, x, y).data)

    errors = {}
    for name, value in params.items():
        flat = rng.choice(value.size, size=min(per_param, value.size), replace=False)
        coords = [np.unravel_index(i, value.shape) for i in flat]
        fd = np.array([(loss_at(name, c, h) - loss_at(name, c, -h)) / (2 * h) for c in coords])
        exact = np.array([grads[name][c] for c in coords])
        errors[name] = float(np.linalg.norm(fd - exact) / max(np.linalg.norm(exact), 1e-300))
    return {"network": kind, "h": h, "coordinates_per_parameter": per_param, "rel_error": errors,
            "max_rel_error": max(errors.values())}


# ---------------------------------------------------------------- training, twice


def train_both(data: Digits, hidden: int, epochs: int, lr: float, batch: int, seed: int) -> dict[str, Any]:
    """The MLP trained by plain SGD with the engine and with torch, from the same weights on the same batches."""
    params = init_params("mlp", hidden, np.random.default_rng(seed))
    model = torch_model("mlp", params)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    mine = {k: v.copy() for k, v in params.items()}
    order = np.random.default_rng(seed + 1)
    curves: dict[str, list[float]] = {"engine": [], "torch": []}
    for _ in range(epochs):
        perm = order.permutation(len(data.y_train))
        sums = {"engine": 0.0, "torch": 0.0}
        for i in range(0, len(perm), batch):
            xb, yb = data.x_train[perm[i:i + batch]], data.y_train[perm[i:i + batch]]
            loss, grads = engine_grads("mlp", mine, xb, yb)
            for k in mine:
                mine[k] -= lr * grads[k]  # plain SGD, written out: θ ← θ − η ∂L/∂θ
            optimizer.zero_grad()
            torch_loss = F.cross_entropy(model(torch.as_tensor(xb)), torch.as_tensor(yb))
            torch_loss.backward()
            optimizer.step()
            sums["engine"] += loss * len(yb)
            sums["torch"] += torch_loss.item() * len(yb)
        for k in curves:
            curves[k].append(sums[k] / len(perm))
    h = np.tanh(data.x_test @ mine["w1"] + mine["b1"])
    engine_pred = (h @ mine["w2"] + mine["b2"]).argmax(1)
    with torch.no_grad():
        torch_pred = model(torch.as_tensor(data.x_test)).argmax(1).numpy()
    final = torch_model("mlp", mine)  # to compare the weights parameter by parameter
    drift = max((a - b).abs().max().item() for a, b in zip(final.parameters(), model.parameters(), strict=True))
    return {"hidden": hidden, "epochs": epochs, "lr": lr, "batch": batch, "train_loss": curves,
            "test_accuracy": {"engine": float((engine_pred == data.y_test).mean()),
                              "torch": float((torch_pred == data.y_test).mean())},
            "test_predictions_differing": int((engine_pred != torch_pred).sum()), "test_size": len(data.y_test),
            "max_weight_difference": drift}


# ---------------------------------------------------------------- the cheap gradient principle


def _best_time(fn: Callable[[], Any], repeats: int) -> float:
    fn()  # warm-up: allocations, caches
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def gradient_cost(kind: str, params: Params, x: np.ndarray, y: np.ndarray, repeats: int) -> dict[str, Any]:
    """Seconds of one forward pass and of forward + backward (best of `repeats`), engine and torch, and their
    ratio: what a gradient costs in function evaluations."""
    tensors = {k: ad.Tensor(v) for k, v in params.items()}
    model = torch_model(kind, params)
    xt, yt = torch.as_tensor(x), torch.as_tensor(y)

    def engine_forward() -> None:
        engine_loss(kind, tensors, x, y)

    def engine_gradient() -> None:
        for t in tensors.values():
            t.zero_grad()
        engine_loss(kind, tensors, x, y).backward()

    def torch_forward() -> None:
        with torch.no_grad():
            F.cross_entropy(model(xt), yt)

    def torch_gradient() -> None:
        model.zero_grad()
        F.cross_entropy(model(xt), yt).backward()

    row: dict[str, Any] = {"network": kind, "batch": len(x), "parameters": int(sum(v.size for v in params.values()))}
    for name, forward, gradient in (("engine", engine_forward, engine_gradient),
                                    ("torch", torch_forward, torch_gradient)):
        f, g = _best_time(forward, repeats), _best_time(gradient, repeats)
        row[name] = {"forward_s": f, "gradient_s": g, "ratio": g / f}
    # What the gradient would cost without reverse mode: one forward per parameter, plus f (one-sided differences).
    row["finite_difference_ratio"] = row["parameters"] + 1
    return row


# ---------------------------------------------------------------- the lab


@LABS.register("autodiff")
def autodiff(out: Path, quick: bool = False, seed: int = 0) -> tuple[dict[str, Any], str]:
    """Backpropagation from scratch: a numpy reverse-mode engine against torch.autograd (float64) and finite differences; an MLP trained both ways; the cost of a gradient."""  # noqa: E501
    config = {"seed": seed, "hidden": 64, "batch": 32, "epochs": 30, "lr": 0.1, "parity_batch": 64,
              "fd_per_param": 25, "fd_h": 1e-6, "timing_batch": 256, "timing_repeats": 50,
              "parity_tolerance": PARITY_TOLERANCE, "fd_tolerance": FD_TOLERANCE, "dtype": "float64",
              "data": "builtin:digits, split val 0.1 / test 0.2, seed 0"}
    if quick:
        config.update(epochs=10, fd_per_param=8, timing_repeats=20)
    from threadpoolctl import threadpool_limits

    # One thread for numpy's BLAS and for torch: like with like, and steady timings on a shared machine (two
    # BLAS threads waiting on each other made a 0.2 ms forward pass take 15 ms under load).
    with torch_threads(1), threadpool_limits(1):
        return _experiment(config, Path(out))


def _experiment(config: dict[str, Any], out: Path) -> tuple[dict[str, Any], str]:
    seed = config["seed"]
    data = load_digits()
    rng = np.random.default_rng(seed)
    batch = slice(0, config["parity_batch"])
    x, y = data.x_train[batch], data.y_train[batch]
    networks = {kind: init_params(kind, config["hidden"], np.random.default_rng(seed + i))
                for i, kind in enumerate(("mlp", "cnn"))}

    log.info("autodiff: gradient parity per operation and per network")
    ops = op_parity(seed)
    nets = [network_parity(kind, params, x, y) for kind, params in networks.items()]
    fd = [finite_differences(kind, params, x, y, config["fd_per_param"], config["fd_h"], rng)
          for kind, params in networks.items()]
    log.info("autodiff: training the MLP with the engine and with torch (%d epochs)", config["epochs"])
    training = train_both(data, config["hidden"], config["epochs"], config["lr"], config["batch"], seed)
    log.info("autodiff: timing forward and backward passes")
    tx, ty = data.x_train[: config["timing_batch"]], data.y_train[: config["timing_batch"]]
    cost = [gradient_cost(kind, params, tx, ty, config["timing_repeats"]) for kind, params in networks.items()]

    worst_op = max(r["grad_rel_error"] for r in ops)
    worst_net = max(r["max_grad_rel_error"] for r in nets)
    worst_fd = max(r["max_rel_error"] for r in fd)
    acc = training["test_accuracy"]
    headline = {"max op grad rel error vs torch": worst_op, "max network grad rel error vs torch": worst_net,
                "max finite-difference rel error": worst_fd,
                "MLP test accuracy, engine / torch": f"{acc['engine']:.4f} / {acc['torch']:.4f}",
                **{f"gradient/forward time, {r['network']} (engine / torch)":
                   f"{r['engine']['ratio']:.2f} / {r['torch']['ratio']:.2f}" for r in cost}}
    results = {"config": config, "ops": ops, "networks": nets, "finite_differences": fd, "training": training,
               "cost": cost, "max_op_grad_rel_error": worst_op, "max_network_grad_rel_error": worst_net,
               "max_fd_rel_error": worst_fd,
               "passed": {"parity": max(worst_op, worst_net) <= PARITY_TOLERANCE, "fd": worst_fd <= FD_TOLERANCE,
                          "same_accuracy": abs(acc["engine"] - acc["torch"]) <= 1 / training["test_size"]},
               "headline": headline, "files": ["parity.png", "training.png", "summary.md", "results.json"]}
    _plot_parity(ops, nets, fd, out / "parity.png")
    _plot_training(training, cost, out / "training.png")
    return results, _summary(results)


# ---------------------------------------------------------------- figures and summary


def _plot_parity(ops: list[dict], nets: list[dict], fd: list[dict], path: Path) -> None:
    from dlforge.plots import plt, save

    labels = [r["op"] for r in ops] + [f"{r['network']}: {k}" for r in nets for k in r["grad_rel_error"]]
    values = [r["grad_rel_error"] for r in ops] + [v for r in nets for v in r["grad_rel_error"].values()]
    fd_labels = [f"{r['network']}: {k}" for r in fd for k in r["rel_error"]]
    fd_values = [v for r in fd for v in r["rel_error"].values()]
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 5.5), width_ratios=[3, 2])
    _error_bars(a, labels, values, PARITY_TOLERANCE, "max |ours − torch.autograd| / max |torch|  (float64)",
                "gradients against torch.autograd", "C0")
    _error_bars(b, fd_labels, fd_values, FD_TOLERANCE, "‖central differences − gradient‖ / ‖gradient‖",
                "gradients against finite differences", "C1")
    save(fig, path)


def _error_bars(ax: Any, labels: list[str], values: list[float], tolerance: float, xlabel: str, title: str,
                color: str) -> None:
    """Relative errors as bars on a log axis, with the tolerance they must stay under."""
    floor = 1e-18  # an exact match (0) drawn at the floor of the log axis
    ax.barh(range(len(values)), [max(v, floor) for v in values], color=color)
    ax.set_yticks(range(len(values)), labels, fontsize=7)
    ax.axvline(tolerance, color="C3", ls="--", label=f"tolerance {tolerance:g}")
    ax.set_xscale("log")
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.legend(fontsize=8)


def _plot_training(training: dict, cost: list[dict], path: Path) -> None:
    from dlforge.plots import plt, save

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    epochs = range(1, training["epochs"] + 1)
    a.plot(epochs, training["train_loss"]["engine"], "o-", ms=3, label="engine (numpy)")
    a.plot(epochs, training["train_loss"]["torch"], "x--", ms=5, label="torch")
    a.set_yscale("log")
    a.set_xlabel("epoch")
    a.set_ylabel("mean training cross-entropy")
    acc = training["test_accuracy"]
    a.set_title(f"MLP on digits: test accuracy {acc['engine']:.3f} (engine), {acc['torch']:.3f} (torch)")
    a.legend(fontsize=8)
    names = [r["network"] for r in cost]
    x = np.arange(len(names))
    b.bar(x - 0.2, [r["engine"]["ratio"] for r in cost], 0.4, label="engine")
    b.bar(x + 0.2, [r["torch"]["ratio"] for r in cost], 0.4, label="torch")
    b.axhspan(*GRIEWANK_OMEGA, color="grey", alpha=0.2, label="Griewank & Walther's ω ∈ [3, 4]")
    b.set_xticks(x, [f"{n} ({r['parameters']} parameters)" for n, r in zip(names, cost, strict=True)])
    b.set_ylabel("time(forward + backward) / time(forward)")
    b.set_title("the cheap gradient principle")
    b.legend(fontsize=8)
    save(fig, path)


def _summary(results: dict[str, Any]) -> str:
    c, t = results["config"], results["training"]
    lines = ["# Backpropagation from scratch", "",
             "A reverse-mode engine in numpy (`dlforge/labs/autodiff_engine.py`): every operation records its "
             "inputs and owns its backward rule; `backward()` replays the record in reverse topological order. "
             "Everything below is float64.", "",
             "| claim | reference | ours |", "|---|---|---|",
             f"| gradients equal torch.autograd's, every op | ≤ {PARITY_TOLERANCE:g} relative (issue's bar; "
             f"torch.autograd is the reference) | max {results['max_op_grad_rel_error']:.1e} |",
             f"| ... and whole networks (MLP, CNN) | ≤ {PARITY_TOLERANCE:g} | "
             f"max {results['max_network_grad_rel_error']:.1e} |",
             f"| central finite differences agree | ≤ {FD_TOLERANCE:g} relative | "
             f"max {results['max_fd_rel_error']:.1e} (h = {c['fd_h']:g}) |",
             f"| same accuracy with the same seed | equal | engine {t['test_accuracy']['engine']:.4f}, torch "
             f"{t['test_accuracy']['torch']:.4f} ({t['test_predictions_differing']} of {t['test_size']} test "
             "predictions differ) |"]
    for r in results["cost"]:
        lines.append(f"| cheap gradient, {r['network']}: time(f + ∇f) / time(f) | ω ∈ [3, 4] (Griewank & "
                     f"Walther 2008); {r['finite_difference_ratio']} by finite differences | engine "
                     f"{r['engine']['ratio']:.2f}, torch {r['torch']['ratio']:.2f} |")
    lines += ["", "## Per operation (gradient relative error against torch.autograd)", "",
              "| operation | output | gradient |", "|---|---|---|"]
    lines += [f"| {r['op']} | {r['output_rel_error']:.1e} | {r['grad_rel_error']:.1e} |" for r in results["ops"]]
    lines += ["", "## Whole networks", ""]
    for net, fd in zip(results["networks"], results["finite_differences"], strict=True):
        lines.append(f"- {net['network']} ({net['parameters']} parameters, batch of {net['batch']} digits): "
                     "gradient vs torch " + ", ".join(f"{k} {v:.1e}" for k, v in net["grad_rel_error"].items())
                     + "; vs finite differences (" + f"{fd['coordinates_per_parameter']} coordinates each) "
                     + ", ".join(f"{k} {v:.1e}" for k, v in fd["rel_error"].items()) + ".")
    lines += ["", "## Training", "",
              f"MLP 64 → {t['hidden']} (tanh) → 10, weights N(0, 1/fan_in), plain SGD (lr {t['lr']}, batch "
              f"{t['batch']}, {t['epochs']} epochs, seed {c['seed']}) on the {c['data']}: the engine and torch "
              f"start from the same weights and see the same batches. Test accuracy: engine "
              f"{t['test_accuracy']['engine']:.4f}, torch {t['test_accuracy']['torch']:.4f}. After "
              f"{t['epochs']} epochs the two sets of weights differ by at most {t['max_weight_difference']:.1e}: "
              "the trajectories are the same up to float64 rounding.", "",
              "## The cost of a gradient", "",
              f"Best of {c['timing_repeats']} runs on a batch of {c['timing_batch']}, one thread. Reverse mode "
              "costs a few forward passes whatever the number of parameters; a finite-difference gradient costs "
              "one forward pass per parameter.", "",
              "| network | engine forward | engine f + ∇f | ratio | torch forward | torch f + ∇f | ratio |",
              "|---|---|---|---|---|---|---|"]
    for r in results["cost"]:
        e, q = r["engine"], r["torch"]
        lines.append(f"| {r['network']} | {e['forward_s'] * 1e3:.2f} ms | {e['gradient_s'] * 1e3:.2f} ms | "
                     f"{e['ratio']:.2f} | {q['forward_s'] * 1e3:.2f} ms | {q['gradient_s'] * 1e3:.2f} ms | "
                     f"{q['ratio']:.2f} |")
    lines += ["", "See parity.png (every gradient's error) and training.png (both training curves; the cost "
              "ratios).", ""]
    return "\n".join(lines)
