"""Stagewise training as accelerated gradient descent (Agarwal, Awasthi, Kale, Zhao, 2024), as small
numpy experiments.

One stage adds a component and trains only that component for `inner_steps` gradient steps, from
an initialisation chosen by `init`:

    zero           f_{t+1} = 0                                   -> functional gradient descent
    random         f_{t+1} = noise                               -> gradient descent on a smoothed loss
    copy           f_{t+1} = f_t = F_t - F_{t-1}                 -> Nesterov with momentum 1
    copy_beta      f_{t+1} = beta * f_t, beta = nesterov_beta()  -> Nesterov with constant momentum
    copy_schedule  f_{t+1} = (t-1)/(t+2) * f_t                   -> Nesterov with its convex schedule

Additive models (boosting): F_T = f_1 + ... + f_T with linear components f_t(x) = <w_t, x>. With
one inner step of size 1/L from f_{t+1} = beta f_t,

    F_{t+1} = F_t + beta (F_t - F_{t-1}) - (1/L) grad L(F_t + beta (F_t - F_{t-1})),

which is Nesterov's update, exactly; `gradient_descent` and `nesterov` run those updates
explicitly so the two can be compared number by number.

Residual networks: F_T = (I + W_T) ... (I + W_1), linear, on the population loss of linear
regression 1/2 E||F x - A x||^2 = 1/2 tr((F - A) S (F - A)^T) with input covariance S. The new
layer's component is W_{t+1} F_t, and a copy W_{t+1} = W_t gives W_t F_t = (F_t - F_{t-1}) (I + W_t):
the momentum term plus an error that is second order in the layer weights.

Every problem is batched over seeds: arrays carry a leading seed axis S, and one run advances all
seeds at once (a Python loop over stages, vectorised over seeds). Suboptimality is always relative:
(L(F) - L*) / (L(F_0) - L*), so 1 at the start.

Problem design. The eigenvalues of the curvature run from 1/kappa to 1 (both ends fixed, the rest
log-uniform at random), and the optimum is placed so that every eigendirection holds the same share
of the initial excess loss (exactly for least squares and residual networks, approximately for
logistic regression, whose loss is not quadratic). Then a relative target such as 1e-3 can only be
reached once the slowest direction has converged, and the stage count measures the rate rather
than the luck of where the initial error sits: with Gaussian shares, a seed whose slowest
direction holds less than the target's share lets gradient descent skip it, and its fitted
exponent drops (to ~0.8 in our trials) while Nesterov's, whose rate is the same for all slow
directions, does not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

INITS = ("zero", "random", "copy", "copy_beta", "copy_schedule")


# ----------------------------------------------------------------------------- momentum


def nesterov_beta(kappa, inner_steps: int = 1):
    """Constant Nesterov momentum for condition number `kappa` when a stage makes `inner_steps` steps.

    Per eigenvalue, a stage contracts the error by m = (1 - lam/L)^k before momentum is applied,
    so the stage map is Nesterov's with the slowest contraction m = (1 - 1/kappa)^k. Critical
    damping at that m gives beta = (1 - sqrt(q)) / (1 + sqrt(q)) with q = 1 - m; for k = 1 this is
    Nesterov's (sqrt(kappa) - 1) / (sqrt(kappa) + 1).
    """
    kappa = np.asarray(kappa, dtype=float)
    if np.any(kappa < 1):
        raise ValueError(f"kappa must be >= 1, got {kappa}")
    if inner_steps < 1:
        raise ValueError(f"inner_steps must be >= 1, got {inner_steps}")
    q = 1.0 - (1.0 - 1.0 / kappa) ** inner_steps
    beta = (1.0 - np.sqrt(q)) / (1.0 + np.sqrt(q))
    return float(beta) if beta.ndim == 0 else beta


def momentum(init: str, components: int, beta=None):
    """Scale of the copy of the last component used to initialise component `components + 1`.

    `components` is how many components exist already (0 at the first stage, where there is
    nothing to copy and every copy variant starts from zero). `beta` is used by copy_beta only.
    """
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    if init in ("zero", "random") or components == 0:
        return 0.0
    if init == "copy":
        return 1.0
    if init == "copy_schedule":
        # Nesterov's schedule for convex problems: beta_t = (t - 1) / (t + 2), no kappa needed.
        return (components - 1) / (components + 2)
    if beta is None:
        raise ValueError("init 'copy_beta' needs beta")
    return beta


# ----------------------------------------------------------------------------- problems


def _spectrum(kappa: float, dim: int, rng: np.random.Generator) -> np.ndarray:
    # Ends pinned at 1/kappa and 1 so the condition number is exactly kappa.
    inner = 10.0 ** rng.uniform(-math.log10(kappa), 0.0, size=dim - 2)
    return np.sort(np.concatenate([[1.0 / kappa], inner, [1.0]]))


def _orthogonal(rng: np.random.Generator, rows: int, cols: int) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((rows, cols)))
    return q * np.sign(np.diag(r))  # sign fix makes the distribution uniform (Haar)


def _design(kappa: float, dim: int, samples: int, rng: np.random.Generator):
    """Features X (samples, dim) with X^T X / samples = U diag(lam) U^T exactly, plus lam and U."""
    lam = _spectrum(kappa, dim, rng)
    u = _orthogonal(rng, dim, dim)
    x = math.sqrt(samples) * _orthogonal(rng, samples, dim) @ (np.sqrt(lam)[:, None] * u.T)
    return x, lam, u


def _signs(rng: np.random.Generator, dim: int) -> np.ndarray:
    return rng.choice([-1.0, 1.0], size=dim)


def _check_problem_args(kappa: float, seeds: Sequence[int], dim: int, min_dim: int = 2) -> None:
    if not kappa >= 1:
        raise ValueError(f"kappa must be >= 1, got {kappa}")
    if len(seeds) == 0:
        raise ValueError("seeds must not be empty")
    if dim < min_dim:
        raise ValueError(f"dim must be >= {min_dim}, got {dim}")


@dataclass
class LeastSquares:
    """1/(2n) ||X w - y||^2 per seed, stored as its Hessian H = X^T X / n and c = X^T y / n."""

    hessian: np.ndarray  # (S, d, d)
    linear: np.ndarray  # (S, d)
    w_opt: np.ndarray  # (S, d)
    smoothness: np.ndarray  # (S,) largest eigenvalue of H: the step size is 1/smoothness
    kappa_eff: np.ndarray  # (S,) condition number of H
    kappa: float  # the requested condition number

    @property
    def params_per_component(self) -> int:
        return self.w_opt.shape[1]

    def start(self) -> np.ndarray:
        return np.zeros_like(self.w_opt)

    def grad(self, w: np.ndarray) -> np.ndarray:
        return (self.hessian @ w[:, :, None])[:, :, 0] - self.linear

    def excess(self, w: np.ndarray) -> np.ndarray:
        e = w - self.w_opt
        return 0.5 * np.sum(e * (self.hessian @ e[:, :, None])[:, :, 0], axis=1)


def make_least_squares(kappa: float, seeds: Sequence[int], dim: int = 20, samples: int = 200, noise: float = 0.1) -> LeastSquares:
    """Least squares with Hessian condition number exactly `kappa`, one instance per seed."""
    _check_problem_args(kappa, seeds, dim)
    if samples < dim:
        raise ValueError(f"samples must be >= dim ({dim}), got {samples}")
    hs, cs, ws = [], [], []
    for seed in seeds:
        rng = np.random.default_rng([seed, 1])
        x, lam, u = _design(kappa, dim, samples, rng)
        # Teacher weight +-1/sqrt(lam) along each eigenvector: equal initial loss share per direction.
        teacher = u @ (_signs(rng, dim) / np.sqrt(lam))
        y = x @ teacher + noise * rng.standard_normal(samples)
        h = x.T @ x / samples
        c = x.T @ y / samples
        hs.append(h)
        cs.append(c)
        ws.append(np.linalg.solve(h, c))
    h = np.stack(hs)
    eig = np.linalg.eigvalsh(h)
    return LeastSquares(h, np.stack(cs), np.stack(ws), eig[:, -1], eig[:, -1] / eig[:, 0], float(kappa))


@dataclass
class Logistic:
    """Mean logistic loss log(1 + exp(-y <w, x>)) per seed, labels y in {-1, +1}."""

    features: np.ndarray  # (S, n, d)
    labels: np.ndarray  # (S, n)
    w_opt: np.ndarray  # (S, d)
    loss_opt: np.ndarray  # (S,)
    smoothness: np.ndarray  # (S,) lambda_max(X^T X / n) / 4, a global bound on the curvature
    kappa_eff: np.ndarray  # (S,) smoothness / smallest eigenvalue of the Hessian at the optimum
    kappa: float  # condition number of the feature covariance

    @property
    def params_per_component(self) -> int:
        return self.w_opt.shape[1]

    def start(self) -> np.ndarray:
        return np.zeros_like(self.w_opt)

    def __post_init__(self):
        self._signed = self.labels[:, :, None] * self.features  # rows y_i x_i: margins are one matmul

    def _margins(self, w: np.ndarray) -> np.ndarray:
        return (self._signed @ w[:, :, None])[:, :, 0]  # (S, n)

    def loss(self, w: np.ndarray) -> np.ndarray:
        return _softplus(-self._margins(w)).mean(axis=1)

    def grad(self, w: np.ndarray) -> np.ndarray:
        coef = -_sigmoid(-self._margins(w))  # d/dm of log(1 + exp(-m))
        return (coef[:, None, :] @ self._signed)[:, 0, :] / self.labels.shape[1]

    def excess(self, w: np.ndarray) -> np.ndarray:
        return self.loss(w) - self.loss_opt


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # no overflow for large |z|


def _softplus(z: np.ndarray) -> np.ndarray:
    # log(1 + exp(z)) without overflow; several times faster than np.logaddexp(0, z).
    return np.maximum(z, 0.0) + np.log1p(np.exp(-np.abs(z)))


def _logistic_newton(x: np.ndarray, y: np.ndarray, iters: int = 100) -> np.ndarray:
    """Minimiser of the mean logistic loss by damped Newton, to about machine precision."""
    n, d = x.shape
    w = np.zeros(d)

    def loss(v):
        return _softplus(-y * (x @ v)).mean()

    for _ in range(iters):
        m = y * (x @ w)
        g = x.T @ (-y * _sigmoid(-m)) / n
        p = _sigmoid(m) * _sigmoid(-m)
        h = (x * p[:, None]).T @ x / n
        step = np.linalg.solve(h, g)
        if g @ step < 1e-20:  # squared Newton decrement ~ 2 (L(w) - L*): converged far below any target
            return w
        t, f0 = 1.0, loss(w)
        # Backtracking keeps Newton monotone far from the optimum; near it (decrement < 1e-12) loss
        # differences drown in rounding and full steps converge quadratically anyway.
        while g @ step > 1e-12 and loss(w - t * step) > f0 and t > 1e-10:
            t *= 0.5
        w = w - t * step
    raise ValueError("logistic problem has no finite minimiser (data separable?); lower margin or raise samples")


def make_logistic(kappa: float, seeds: Sequence[int], dim: int = 10, samples: int = 250, margin: float = 1.5) -> Logistic:
    """Logistic regression whose feature covariance has condition number exactly `kappa`.

    Labels come from a logistic teacher whose logit has standard deviation `margin` over the
    sample, split equally between the eigendirections of the covariance; the labels are noisy,
    so the data are not separable and the minimiser is finite.
    """
    _check_problem_args(kappa, seeds, dim)
    if samples < 10 * dim:
        raise ValueError(f"samples must be >= 10 * dim ({10 * dim}), got {samples}")
    xs, ys, ws, ls, kes, smooth = [], [], [], [], [], []
    for seed in seeds:
        rng = np.random.default_rng([seed, 2])
        x, lam, u = _design(kappa, dim, samples, rng)
        teacher = u @ (_signs(rng, dim) / np.sqrt(lam)) * (margin / math.sqrt(dim))
        y = np.where(rng.random(samples) < _sigmoid(x @ teacher), 1.0, -1.0)
        w = _logistic_newton(x, y)
        p = _sigmoid(y * (x @ w)) * _sigmoid(-y * (x @ w))
        mu = np.linalg.eigvalsh((x * p[:, None]).T @ x / samples)[0]
        lip = lam[-1] / 4.0
        xs.append(x)
        ys.append(y)
        ws.append(w)
        ls.append(_softplus(-y * (x @ w)).mean())
        kes.append(lip / mu)
        smooth.append(lip)
    return Logistic(np.stack(xs), np.stack(ys), np.stack(ws), np.array(ls), np.array(smooth), np.array(kes), float(kappa))


@dataclass
class ResidualRegression:
    """Linear regression y = A x, x ~ N(0, S), fitted by F = (I + W_T) ... (I + W_1).

    Population loss 1/2 tr((F - A) S (F - A)^T), so L* = 0 and the functional gradient is
    (F - A) S. The target A = I + P with ||P||_2 = radius keeps every weight near the identity.
    """

    covariance: np.ndarray  # (S, d, d)
    target: np.ndarray  # (S, d, d) the matrix A
    smoothness: np.ndarray  # (S,) lambda_max(S): step size of functional gradient descent
    kappa_eff: np.ndarray  # (S,) cond(A S A^T): curvature of a new top layer near the solution
    kappa: float  # cond(S)
    radius: float

    @property
    def params_per_component(self) -> int:
        return self.target.shape[1] ** 2

    def start(self) -> np.ndarray:
        return np.broadcast_to(np.eye(self.target.shape[1]), self.target.shape).copy()

    def grad(self, f: np.ndarray) -> np.ndarray:
        return (f - self.target) @ self.covariance

    def excess(self, f: np.ndarray) -> np.ndarray:
        e = f - self.target
        return 0.5 * np.sum((e @ self.covariance) * e, axis=(1, 2))


def make_residual_regression(kappa: float, seeds: Sequence[int], dim: int = 10, radius: float = 0.5) -> ResidualRegression:
    """Ill-conditioned linear regression for deep linear residual networks, one instance per seed."""
    _check_problem_args(kappa, seeds, dim)
    if not 0 < radius < 1:
        raise ValueError(f"radius must be in (0, 1), got {radius}")
    covs, targets = [], []
    for seed in seeds:
        rng = np.random.default_rng([seed, 3])
        lam = _spectrum(kappa, dim, rng)
        u = _orthogonal(rng, dim, dim)
        # Column u_i of the error A - I has length 1/sqrt(lam_i) (before scaling): equal loss share per direction.
        p = _orthogonal(rng, dim, dim) @ np.diag(_signs(rng, dim) / np.sqrt(lam)) @ u.T
        p *= radius / np.linalg.norm(p, 2)
        covs.append(u @ np.diag(lam) @ u.T)
        targets.append(np.eye(dim) + p)
    cov, a = np.stack(covs), np.stack(targets)
    eig = np.linalg.eigvalsh(a @ cov @ a.transpose(0, 2, 1))
    return ResidualRegression(cov, a, np.linalg.eigvalsh(cov)[:, -1], eig[:, -1] / eig[:, 0], float(kappa), radius)


# ----------------------------------------------------------------------------- runs


def random_init_std(problem, inner_steps: int, floor: float) -> np.ndarray:
    """Per-seed std of a random new component whose noise floor is about `floor` (relative excess).

    Noise xi added every stage and then contracted by m = (1 - lam/L)^k settles at variance
    std^2 m^2 / (1 - m^2) per direction, i.e. an excess of at most std^2 L / (4 k) per parameter
    (the bound is reached for lam << L). Summed over P parameters and divided by the initial
    excess L0 this is floor = P std^2 L / (4 k L0).
    """
    if not floor > 0:
        raise ValueError(f"floor must be positive, got {floor}")
    l0 = problem.excess(problem.start())
    return np.sqrt(4.0 * inner_steps * l0 * floor / (problem.params_per_component * problem.smoothness))


STAY_MARGIN = 0.5  # a run counts as having stayed below target after 50% more stages below it
UNTIL = ("reach", "stay")


def _check_run_args(init: str, max_stages: int, inner_steps: int, target, until: str) -> None:
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    if max_stages < 1:
        raise ValueError(f"max_stages must be >= 1, got {max_stages}")
    if inner_steps < 1:
        raise ValueError(f"inner_steps must be >= 1, got {inner_steps}")
    _check_stop_args(target, until)


def _check_stop_args(target, until: str) -> None:
    if target is not None and not 0 < target < 1:
        raise ValueError(f"target must be in (0, 1), got {target}")
    if until not in UNTIL:
        raise ValueError(f"until must be one of {UNTIL}, got {until!r}")


class _Stopper:
    """Early stop for a run over all seeds at once.

    until="reach": every seed has been at or below `target` once. until="stay": every seed has
    been below `target` for the last STAY_MARGIN fraction of the run and more, which momentum
    runs need because their loss oscillates and can dip below the target and come back.
    """

    def __init__(self, target: float | None, until: str, num_seeds: int):
        self.target, self.until = target, until
        self.reached = np.zeros(num_seeds, dtype=bool)
        self.last_above = np.zeros(num_seeds, dtype=int)

    def __call__(self, stage: int, rel: np.ndarray) -> bool:
        if self.target is None:
            return False
        above = rel > self.target
        self.reached |= ~above
        self.last_above[above] = stage
        if self.until == "reach":
            return bool(self.reached.all())
        return bool(np.all(stage >= (1 + STAY_MARGIN) * (self.last_above + 1)))


def stagewise_additive(
    problem,
    init: str,
    *,
    max_stages: int,
    inner_steps: int = 1,
    beta=None,
    target: float | None = None,
    until: str = "reach",
    random_floor: float = 1e-4,
    seed: int = 0,
) -> np.ndarray:
    """Boosting-style stagewise training of F = f_1 + f_2 + ... ; returns relative excess (S, T + 1).

    Stage t + 1 initialises the new component from `init` (see the module docstring), trains only
    it for `inner_steps` steps of size 1/L on L(F_t + f), then freezes it. Stops after
    `max_stages` stages, or earlier once every seed has reached `target` (or stayed below it,
    `until="stay"`). `beta` (a float or one per seed) is the copy_beta momentum;
    `random_floor` sets the random init scale (see `random_init_std`).
    """
    _check_run_args(init, max_stages, inner_steps, target, until)
    eta = 1.0 / problem.smoothness[:, None]  # (S, 1)
    beta = None if beta is None else np.reshape(np.asarray(beta, dtype=float), (-1, 1))
    rng = np.random.default_rng([seed, 10])
    std = random_init_std(problem, inner_steps, random_floor)[:, None] if init == "random" else None
    total = problem.start()
    last = np.zeros_like(total)
    l0 = problem.excess(total)
    rel = [np.ones_like(l0)]
    stop = _Stopper(target, until, len(l0))
    for t in range(max_stages):
        if init == "random":
            f = std * rng.standard_normal(total.shape)
        else:
            f = momentum(init, t, beta) * last
        for _ in range(inner_steps):
            f = f - eta * problem.grad(total + f)
        total = total + f
        last = f
        rel.append(problem.excess(total) / l0)
        if stop(t + 1, rel[-1]):
            break
    return np.stack(rel, axis=1)


def gradient_descent(problem, steps: int, *, target: float | None = None, until: str = "reach") -> np.ndarray:
    """Explicit gradient descent with step 1/L on the model F itself; relative excess (S, steps + 1)."""
    return nesterov(problem, steps, beta=0.0, target=target, until=until)


def nesterov(
    problem, steps: int, beta: float | np.ndarray | Callable[[int], float], *, target: float | None = None,
    until: str = "reach",
) -> np.ndarray:
    """Explicit Nesterov: y = x_t + b_t (x_t - x_{t-1}), x_{t+1} = y - (1/L) grad L(y).

    `beta` is a float, one float per seed, or a function of t returning b_t (t = 0, 1, ...).
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    _check_stop_args(target, until)
    shape = (-1,) + (1,) * (problem.start().ndim - 1)
    eta = np.reshape(1.0 / problem.smoothness, shape)
    x = problem.start()
    x_prev = x
    l0 = problem.excess(x)
    rel = [np.ones_like(l0)]
    stop = _Stopper(target, until, len(l0))
    for t in range(steps):
        b = beta(t) if callable(beta) else beta
        b = np.reshape(np.asarray(b, dtype=float), shape) if np.ndim(b) else b
        y = x + b * (x - x_prev)
        x_prev, x = x, y - eta * problem.grad(y)
        rel.append(problem.excess(x) / l0)
        if stop(t + 1, rel[-1]):
            break
    return np.stack(rel, axis=1)


def stagewise_residual(
    problem: ResidualRegression,
    init: str,
    *,
    max_stages: int,
    inner_steps: int = 1,
    beta=None,
    target: float | None = None,
    until: str = "reach",
    random_floor: float = 1e-4,
    seed: int = 0,
) -> np.ndarray:
    """Grow F = (I + W_T) ... (I + W_1) one top layer per stage; returns relative excess (S, T + 1).

    The new layer W starts from `init` (a scaled copy of the previous W for the copy variants)
    and takes `inner_steps` steps on L((I + W) F_t) with step 1 / lambda_max(F_t S F_t^T), the
    exact smoothness of that quadratic in W; the layers below stay frozen. Arguments as for
    `stagewise_additive`.
    """
    _check_run_args(init, max_stages, inner_steps, target, until)
    beta = None if beta is None else np.reshape(np.asarray(beta, dtype=float), (-1, 1, 1))
    rng = np.random.default_rng([seed, 11])
    std = random_init_std(problem, inner_steps, random_floor)[:, None, None] if init == "random" else None
    eye = np.eye(problem.target.shape[1])
    f = problem.start()
    last = np.zeros_like(f)
    l0 = problem.excess(f)
    rel = [np.ones_like(l0)]
    stop = _Stopper(target, until, len(l0))
    for t in range(max_stages):
        if init == "random":
            w = std * rng.standard_normal(f.shape)
        else:
            w = momentum(init, t, beta) * last
        # Hessian of the loss in W is (F S F^T) (x) I, so its top eigenvalue is lambda_max(F S F^T).
        fsf = f @ problem.covariance @ f.transpose(0, 2, 1)
        eta = 1.0 / np.linalg.eigvalsh(fsf)[:, -1][:, None, None]
        for _ in range(inner_steps):
            grad_w = problem.grad((eye + w) @ f) @ f.transpose(0, 2, 1)  # dL/dW = G F^T
            w = w - eta * grad_w
        f = (eye + w) @ f
        last = w
        rel.append(problem.excess(f) / l0)
        if stop(t + 1, rel[-1]):
            break
    return np.stack(rel, axis=1)


def full_depth_gd(
    problem: ResidualRegression, depth: int, *, max_steps: int, target: float | None = None, until: str = "reach"
) -> np.ndarray:
    """Gradient descent on all `depth` layers at once from W_l = 0; relative excess (S, steps + 1).

    Step size 1 / (depth * lambda_max(S)), the inverse of the Hessian's top eigenvalue at W = 0
    (every layer moves F the same way, so their curvatures add up). End to end this is one
    functional gradient step of size 1 / lambda_max(S) per step, as for the stagewise runs.
    """
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    if max_steps < 1:
        raise ValueError(f"max_steps must be >= 1, got {max_steps}")
    _check_stop_args(target, until)
    s, d, _ = problem.target.shape
    eye = np.eye(d)
    eta = (1.0 / (depth * problem.smoothness))[None, :, None, None]
    w = np.zeros((depth, s, d, d))
    rel = []
    l0 = problem.excess(problem.start())
    stop = _Stopper(target, until, s)
    for step in range(max_steps + 1):
        prefix = [np.broadcast_to(eye, (s, d, d))]  # prefix[l] = (I + W_l) ... (I + W_1), prefix[0] = I
        for l in range(depth):
            prefix.append((eye + w[l]) @ prefix[-1])
        rel.append(problem.excess(prefix[-1]) / l0)
        if step == max_steps or stop(step, rel[-1]):
            break
        back = problem.grad(prefix[-1])  # suffix_l^T G, built from the top down
        grads = np.empty_like(w)
        for l in reversed(range(depth)):
            grads[l] = back @ prefix[l].transpose(0, 2, 1)  # dL/dW_l = suffix^T G prefix_{l-1}^T
            back = (eye + w[l]).transpose(0, 2, 1) @ back
        w -= eta * grads
    return np.stack(rel, axis=1)


# ----------------------------------------------------------------------------- measurement


def stages_to_target(rel: np.ndarray, target: float) -> list[int | None]:
    """First stage at which each seed's relative excess is <= target; None if never."""
    hit = rel <= target
    return [int(np.argmax(row)) if row.any() else None for row in hit]


def stages_to_stay(rel: np.ndarray, target: float) -> list[int | None]:
    """Stage after which each seed stays <= target to the end of the run; None if not shown.

    Shown means the run went on for at least STAY_MARGIN times as many stages below the target
    (a loss that oscillates could otherwise come back above it right after the run ends).
    """
    horizon = rel.shape[1] - 1
    out = []
    for row in rel > target:
        stay = int(np.nonzero(row)[0][-1]) + 1 if row.any() else 0
        out.append(stay if horizon >= (1 + STAY_MARGIN) * stay else None)
    return out


def fit_exponent(kappas: Sequence[float], stages: Sequence[float | None]) -> float:
    """Least-squares slope of log(stages) on log(kappa), skipping unreached (None); nan if < 2 points."""
    pts = [(math.log(k), math.log(n)) for k, n in zip(kappas, stages) if n is not None and n > 0]
    if len(pts) < 2:
        return float("nan")
    x, y = np.array(pts).T
    return float(np.polyfit(x, y, 1)[0])


SETTINGS = ("least_squares", "logistic", "residual")
REFERENCES = ("gd", "nesterov")  # explicit methods on F itself, run beside the stagewise ones


@dataclass
class SweepConfig:
    """One rate sweep: stages to reach `target` for every kappa, seed and init of one setting."""

    setting: str
    kappas: tuple[float, ...]
    seeds: tuple[int, ...]
    inits: tuple[str, ...] = INITS
    references: tuple[str, ...] = ()
    inner_steps: int = 1
    target: float = 1e-3
    max_stages_per_kappa: float = 40.0  # cap on stages: this times max kappa_eff, plus 200
    random_floor_fraction: float = 0.1  # random init noise floor, as a fraction of target
    dim: int | None = None  # None: the setting's default
    full_depth_max_kappa: float = 0.0  # residual only: also run full-depth GD for kappa <= this

    def __post_init__(self):
        if self.setting not in SETTINGS:
            raise ValueError(f"setting must be one of {SETTINGS}, got {self.setting!r}")
        if len(self.kappas) < 2:
            raise ValueError(f"kappas needs at least 2 values to fit an exponent, got {list(self.kappas)}")
        for i, k in enumerate(self.kappas):
            if not k >= 1:
                raise ValueError(f"kappas[{i}] must be >= 1, got {k}")
        if len(set(self.kappas)) != len(self.kappas):
            raise ValueError(f"kappas must be distinct, got {list(self.kappas)}")
        if len(self.seeds) == 0:
            raise ValueError("seeds must not be empty")
        for i, init in enumerate(self.inits):
            if init not in INITS:
                raise ValueError(f"inits[{i}] must be one of {INITS}, got {init!r}")
        for i, ref in enumerate(self.references):
            if ref not in REFERENCES:
                raise ValueError(f"references[{i}] must be one of {REFERENCES}, got {ref!r}")
        if self.inner_steps < 1:
            raise ValueError(f"inner_steps must be >= 1, got {self.inner_steps}")
        if not 0 < self.target < 1:
            raise ValueError(f"target must be in (0, 1), got {self.target}")
        if not self.max_stages_per_kappa > 0:
            raise ValueError(f"max_stages_per_kappa must be positive, got {self.max_stages_per_kappa}")
        if not self.random_floor_fraction > 0:
            raise ValueError(f"random_floor_fraction must be positive, got {self.random_floor_fraction}")
        if self.full_depth_max_kappa > 0 and self.setting != "residual":
            raise ValueError(f"full_depth_max_kappa applies to setting 'residual' only, got setting {self.setting!r}")


def make_problem(setting: str, kappa: float, seeds: Sequence[int], dim: int | None = None):
    kw = {} if dim is None else {"dim": dim}
    if setting == "least_squares":
        return make_least_squares(kappa, seeds, **kw)
    if setting == "logistic":
        return make_logistic(kappa, seeds, **kw)
    if setting == "residual":
        return make_residual_regression(kappa, seeds, **kw)
    raise ValueError(f"setting must be one of {SETTINGS}, got {setting!r}")


def run_stagewise(problem, init: str, **kw) -> np.ndarray:
    """`stagewise_residual` for a ResidualRegression, `stagewise_additive` otherwise."""
    if isinstance(problem, ResidualRegression):
        return stagewise_residual(problem, init, **kw)
    return stagewise_additive(problem, init, **kw)


def rate_sweep(cfg: SweepConfig) -> dict:
    """Stages to target per kappa, seed and method, and the exponents fitted per seed.

    Every run goes on until each seed has stayed below the target (or the cap), so both counts
    come from one run: "reach" (first stage at or below target) and "stay" (stage after which it
    stays below). Returns a JSON-ready dict

        {"methods": {name: {"reach": {kappa: [per seed, None = not reached]}, "stay": {...},
                            "cap": {kappa: cap}, "fit": {"reach": {...}, "stay": {...}}}},
         "kappa_eff": {kappa: [per seed]}, "beta": {kappa: [per seed]}}

    where a fit is {"exponents": [per seed], "mean", "std", "not_reached": {kappa: count}}.
    Methods are the inits, then the references, then "full_depth_gd" (residual; gradient steps
    of a network as deep as copy_beta grew, median over seeds, from W = 0).
    """
    names = list(cfg.inits) + list(cfg.references)
    if cfg.full_depth_max_kappa >= min(cfg.kappas):
        names.append("full_depth_gd")
    out = {"methods": {n: {"reach": {}, "stay": {}, "cap": {}} for n in names}, "kappa_eff": {}, "beta": {}}
    if "full_depth_gd" in names:
        out["methods"]["full_depth_gd"]["depth"] = {}
    stop = {"target": cfg.target, "until": "stay"}
    for kappa in cfg.kappas:
        problem = make_problem(cfg.setting, kappa, cfg.seeds, cfg.dim)
        beta = nesterov_beta(problem.kappa_eff, cfg.inner_steps)
        cap = int(cfg.max_stages_per_kappa * float(np.max(problem.kappa_eff))) + 200
        key = f"{kappa:g}"
        out["kappa_eff"][key] = [float(k) for k in problem.kappa_eff]
        out["beta"][key] = [float(b) for b in beta]
        runs = {}
        for init in cfg.inits:
            runs[init] = run_stagewise(
                problem, init, max_stages=cap, inner_steps=cfg.inner_steps, beta=beta,
                random_floor=cfg.random_floor_fraction * cfg.target, **stop,
            )
        # References take one step of size 1/L per "stage", so compare them at inner_steps = 1.
        if "gd" in cfg.references:
            runs["gd"] = gradient_descent(problem, cap, **stop)
        if "nesterov" in cfg.references:
            runs["nesterov"] = nesterov(problem, cap, nesterov_beta(reference_kappa(problem)), **stop)
        if "full_depth_gd" in names and kappa <= cfg.full_depth_max_kappa:
            grown = [n for n in stages_to_target(runs["copy_beta"], cfg.target) if n is not None] if "copy_beta" in runs else []
            depth = int(np.median(grown)) if grown else 32
            runs["full_depth_gd"] = full_depth_gd(problem, depth, max_steps=cap, **stop)
            out["methods"]["full_depth_gd"]["depth"][key] = depth
        for name, rel in runs.items():
            entry = out["methods"][name]
            entry["reach"][key] = stages_to_target(rel, cfg.target)
            entry["stay"][key] = stages_to_stay(rel, cfg.target)
            entry["cap"][key] = cap
    for entry in out["methods"].values():
        entry["fit"] = {m: _fit(entry[m], len(cfg.seeds)) for m in ("reach", "stay")}
    return out


def reference_kappa(problem) -> np.ndarray:
    # Explicit Nesterov on F: the curvature of the loss in F is S itself for the residual setting.
    if isinstance(problem, ResidualRegression):
        return np.full(problem.target.shape[0], problem.kappa)
    return problem.kappa_eff


def _fit(stages: dict, num_seeds: int) -> dict:
    kappas = [float(k) for k in stages]
    exps = [fit_exponent(kappas, [stages[k][s] for k in stages]) for s in range(num_seeds)]
    finite = [e for e in exps if math.isfinite(e)]
    return {
        "exponents": [e if math.isfinite(e) else None for e in exps],
        "mean": float(np.mean(finite)) if finite else None,
        "std": float(np.std(finite)) if finite else None,
        "not_reached": {k: sum(n is None for n in v) for k, v in stages.items()},
    }
