"""Reverse-mode automatic differentiation in numpy, written out: the chain rule behind backpropagation.

Every operation computes its output from its inputs' values and returns a `Tensor` that remembers the inputs
and a `backward` rule: given ∂L/∂output (the upstream gradient, the output's shape), add each input's share,
∂L/∂input = (∂L/∂output)·(∂output/∂input), into that input's `.grad`. `Tensor.backward()` orders the graph
so that a node runs its rule only once every consumer has added its share (reverse topological order), seeds
∂L/∂L = 1, and runs the rules. That is all reverse mode is: one forward pass that records, one backward pass
that replays the record in reverse, each step local to one operation.

Enough operations for an MLP and a small CNN: add and multiply (with numpy broadcasting), matmul, relu,
tanh, reshape, sum, 2-D convolution (im2col: the input's k×k patches as the rows of a matrix, then a matmul) and
mean cross-entropy on log-softmax. Everything is float64 unless the inputs say otherwise.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


class Tensor:
    """An array, its gradient once `backward` has run, and how it was computed."""

    def __init__(self, data: np.ndarray | float, parents: Sequence[Tensor] = (),
                 backward: Callable[[np.ndarray], None] | None = None) -> None:
        self.data = np.asarray(data, dtype=np.float64) if not isinstance(data, np.ndarray) else data
        self.grad: np.ndarray | None = None
        self.parents = tuple(parents)
        self._backward = backward  # (∂L/∂self) -> adds into the parents' .grad

    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    def accumulate(self, grad: np.ndarray) -> None:
        """Add a share of ∂L/∂self: a tensor used twice gets both uses' gradients (the multivariate chain rule)."""
        self.grad = grad.copy() if self.grad is None else self.grad + grad

    def backward(self, grad: np.ndarray | None = None) -> None:
        """∂self/∂t into t.grad for every tensor t this one depends on; `grad` seeds ∂L/∂self (1 for a scalar)."""
        order, seen, stack = [], set(), [(self, False)]
        while stack:  # iterative depth-first post-order: deep graphs need no recursion
            node, done = stack.pop()
            if done:
                order.append(node)
            elif id(node) not in seen:
                seen.add(id(node))
                stack.append((node, True))
                stack.extend((p, False) for p in node.parents)
        if grad is None and self.data.size != 1:
            raise ValueError("backward() without a seed gradient needs a scalar")
        self.accumulate(np.ones_like(self.data) if grad is None else np.asarray(grad, dtype=self.data.dtype))
        for node in reversed(order):  # every consumer of a node comes before it in this order
            if node._backward is not None and node.grad is not None:
                node._backward(node.grad)

    def zero_grad(self) -> None:
        self.grad = None

    # operators, so that model code reads like numpy
    def __add__(self, other: Tensor) -> Tensor:
        return add(self, other)

    def __mul__(self, other: Tensor) -> Tensor:
        return mul(self, other)

    def __matmul__(self, other: Tensor) -> Tensor:
        return matmul(self, other)


def _unbroadcast(grad: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """∂L/∂input from ∂L/∂output when numpy broadcast `shape` up to grad.shape: broadcasting copies the input
    along the new and the size-1 axes, so the copies' gradients are summed back over those axes."""
    grad = grad.sum(axis=tuple(range(grad.ndim - len(shape)))) if grad.ndim > len(shape) else grad
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    return grad.sum(axis=axes, keepdims=True) if axes else grad


# ---------------------------------------------------------------- elementwise


def add(a: Tensor, b: Tensor) -> Tensor:
    """a + b (broadcast). ∂(a+b)/∂a = 1: the upstream gradient passes through, summed over broadcast axes."""
    def backward(g: np.ndarray) -> None:
        a.accumulate(_unbroadcast(g, a.shape))
        b.accumulate(_unbroadcast(g, b.shape))
    return Tensor(a.data + b.data, (a, b), backward)


def mul(a: Tensor, b: Tensor) -> Tensor:
    """a ⊙ b (broadcast). ∂(ab)/∂a = b."""
    def backward(g: np.ndarray) -> None:
        a.accumulate(_unbroadcast(g * b.data, a.shape))
        b.accumulate(_unbroadcast(g * a.data, b.shape))
    return Tensor(a.data * b.data, (a, b), backward)


def relu(x: Tensor) -> Tensor:
    """max(x, 0). Its derivative is 1 where x > 0 and 0 elsewhere (0 at x = 0, as torch takes it)."""
    def backward(g: np.ndarray) -> None:
        x.accumulate(g * (x.data > 0))
    return Tensor(np.maximum(x.data, 0.0), (x,), backward)


def tanh(x: Tensor) -> Tensor:
    """tanh x. d tanh/dx = 1 − tanh², computed from the output the forward pass kept."""
    y = np.tanh(x.data)

    def backward(g: np.ndarray) -> None:
        x.accumulate(g * (1.0 - y * y))
    return Tensor(y, (x,), backward)


# ---------------------------------------------------------------- shapes and reductions


def reshape(x: Tensor, *shape: int) -> Tensor:
    """The same numbers in another shape; the gradient is reshaped back."""
    def backward(g: np.ndarray) -> None:
        x.accumulate(g.reshape(x.shape))
    return Tensor(x.data.reshape(*shape), (x,), backward)


def sum_(x: Tensor) -> Tensor:
    """The sum of all entries, a scalar: every entry gets the upstream gradient."""
    def backward(g: np.ndarray) -> None:
        x.accumulate(np.broadcast_to(g, x.shape))
    return Tensor(x.data.sum(), (x,), backward)


# ---------------------------------------------------------------- linear maps


def matmul(a: Tensor, b: Tensor) -> Tensor:
    """(N, K) @ (K, M) -> (N, M). For Y = AB: ∂L/∂A = ∂L/∂Y Bᵀ (N, K) and ∂L/∂B = Aᵀ ∂L/∂Y (K, M)."""
    def backward(g: np.ndarray) -> None:
        a.accumulate(g @ b.data.T)
        b.accumulate(a.data.T @ g)
    return Tensor(a.data @ b.data, (a, b), backward)


def conv2d(x: Tensor, w: Tensor, stride: int = 1, padding: int = 0) -> Tensor:
    """Cross-correlation as torch's conv2d computes it: x (B, C, H, W), w (O, C, k, k) -> (B, O, H', W'),
    H' = (H + 2p − k) // s + 1.

    im2col: every k×k patch of the padded input becomes a row of `cols` (B·H'·W', C·k·k), so the convolution
    is one matrix product with the weights as a (C·k·k, O) matrix, and its backward is matmul's: ∂L/∂W =
    colsᵀ ∂L/∂out and ∂L/∂cols = ∂L/∂out Wᵀ. col2im then adds each patch entry's gradient back onto the pixel it
    was copied from (patches overlap: a pixel collects up to k² contributions) and crops the padding."""
    (b, c, h, wd), (o, _, k, _), s, p = x.shape, w.shape, stride, padding
    padded = np.pad(x.data, ((0, 0), (0, 0), (p, p), (p, p)))  # (B, C, H + 2p, W + 2p)
    patches = sliding_window_view(padded, (k, k), axis=(2, 3))[:, :, ::s, ::s]  # (B, C, H', W', k, k), a view
    ho, wo = patches.shape[2:4]
    cols = patches.transpose(0, 2, 3, 1, 4, 5).reshape(b * ho * wo, c * k * k)  # the copy: one row per patch
    kernel = w.data.reshape(o, c * k * k).T  # (C·k·k, O)
    out = (cols @ kernel).reshape(b, ho, wo, o).transpose(0, 3, 1, 2)  # (B, O, H', W')

    def backward(g: np.ndarray) -> None:  # g: (B, O, H', W')
        rows = g.transpose(0, 2, 3, 1).reshape(b * ho * wo, o)  # one row per output position, as cols
        w.accumulate((cols.T @ rows).T.reshape(w.shape))
        d_patches = (rows @ kernel.T).reshape(b, ho, wo, c, k, k)
        grad = np.zeros_like(padded)
        for i in range(k):  # col2im: patch entry (i, j) at output (h, w) came from pixel (s·h + i, s·w + j)
            for j in range(k):
                grad[:, :, i:i + s * ho:s, j:j + s * wo:s] += d_patches[..., i, j].transpose(0, 3, 1, 2)
        x.accumulate(grad[:, :, p:p + h, p:p + wd])
    return Tensor(np.ascontiguousarray(out), (x, w), backward)


# ---------------------------------------------------------------- the loss


def cross_entropy(logits: Tensor, targets: np.ndarray) -> Tensor:
    """Mean over the batch of −log softmax(logits)[target]: logits (B, K), targets (B,) class indices.

    log softmax is computed as z − max z − log Σ exp(z − max z), which never overflows. The gradient of the
    mean NLL with respect to the logits is (softmax − onehot) / B: the predicted distribution less the true one."""
    z = logits.data - logits.data.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))  # (B, K)
    rows = np.arange(len(targets))

    def backward(g: np.ndarray) -> None:
        delta = np.exp(log_p)
        delta[rows, targets] -= 1.0
        logits.accumulate(g * delta / len(targets))
    return Tensor(-log_p[rows, targets].mean(), (logits,), backward)
