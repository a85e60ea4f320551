"""L-BFGS, step for step as torch.optim.LBFGS: a step that calls the loss many times, as torch's closure."""

from __future__ import annotations

import numbers
from collections.abc import Callable
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from ._common import check_lr


@dataclass(frozen=True)
class LBFGSState:
    """What ``torch.optim.LBFGS`` keeps in ``state[params[0]]``, with torch's names.

    The vectors are flat: the params raveled in ``jax.flatten_util.ravel_pytree``
    order (torch concatenates its parameter list in order).

    Attributes:
      func_evals: loss evaluations so far, over every step.
      n_iter: L-BFGS iterations so far, over every step.
      d: the last search direction, or None before the first iteration.
      t: the last step length.
      old_dirs: the gradient differences ``y`` of the history, oldest first.
      old_stps: the steps ``s`` of the history, oldest first.
      ro: ``1 / (y . s)`` for each pair of the history.
      H_diag: the scale of the initial inverse Hessian, ``(y . s) / (y . y)``.
      prev_flat_grad: the gradient where the last iteration started.
      prev_loss: the loss where the last iteration started.
    """

    func_evals: int = 0
    n_iter: int = 0
    d: jax.Array | None = None
    t: float | None = None
    old_dirs: tuple = field(default_factory=tuple)
    old_stps: tuple = field(default_factory=tuple)
    ro: tuple = field(default_factory=tuple)
    H_diag: float | jax.Array = 1
    prev_flat_grad: jax.Array | None = None
    prev_loss: float | None = None


def _cubic_interpolate(x1, f1, g1, x2, f2, g2, bounds=None):
    """torch's ``_cubic_interpolate``: the minimiser of the cubic through two points, clamped to ``bounds``."""
    if bounds is not None:
        xmin_bound, xmax_bound = bounds
    else:
        xmin_bound, xmax_bound = (x1, x2) if x1 <= x2 else (x2, x1)
    d1 = g1 + g2 - 3 * (f1 - f2) / (x1 - x2)
    d2_square = d1**2 - g1 * g2
    if d2_square >= 0:
        d2 = d2_square**0.5
        if x1 <= x2:
            min_pos = x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2 * d2))
        else:
            min_pos = x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + 2 * d2))
        return min(max(min_pos, xmin_bound), xmax_bound)
    return (xmin_bound + xmax_bound) / 2.0


def _dot(a, b) -> float:
    return float(jnp.dot(a, b))


def _strong_wolfe(obj_func, x, t, d, f, g, gtd, c1=1e-4, c2=0.9, tolerance_change=1e-9, max_ls=25):
    """torch's ``_strong_wolfe`` line search (from minFunc), the same branches in the same order."""
    d_norm = float(jnp.max(jnp.abs(d)))
    f_new, g_new = obj_func(x, t, d)
    ls_func_evals = 1
    gtd_new = _dot(g_new, d)

    t_prev, f_prev, g_prev, gtd_prev = 0, f, g, gtd
    done = False
    ls_iter = 0
    while ls_iter < max_ls:
        if f_new > (f + c1 * t * gtd) or (ls_iter > 1 and f_new >= f_prev):
            bracket, bracket_f, bracket_g = [t_prev, t], [f_prev, f_new], [g_prev, g_new]
            bracket_gtd = [gtd_prev, gtd_new]
            break
        if abs(gtd_new) <= -c2 * gtd:
            bracket, bracket_f, bracket_g = [t], [f_new], [g_new]
            done = True
            break
        if gtd_new >= 0:
            bracket, bracket_f, bracket_g = [t_prev, t], [f_prev, f_new], [g_prev, g_new]
            bracket_gtd = [gtd_prev, gtd_new]
            break
        # interpolate
        min_step = t + 0.01 * (t - t_prev)
        max_step = t * 10
        tmp = t
        t = _cubic_interpolate(t_prev, f_prev, gtd_prev, t, f_new, gtd_new, bounds=(min_step, max_step))
        t_prev, f_prev, g_prev, gtd_prev = tmp, f_new, g_new, gtd_new
        f_new, g_new = obj_func(x, t, d)
        ls_func_evals += 1
        gtd_new = _dot(g_new, d)
        ls_iter += 1

    if ls_iter == max_ls:  # reached the maximum number of evaluations
        bracket, bracket_f, bracket_g = [0, t], [f, f_new], [g, g_new]

    # zoom: the bracket holds a point satisfying the strong Wolfe conditions
    insuf_progress = False
    low_pos, high_pos = (0, 1) if bracket_f[0] <= bracket_f[-1] else (1, 0)
    while not done and ls_iter < max_ls:
        if abs(bracket[1] - bracket[0]) * d_norm < tolerance_change:
            break
        t = _cubic_interpolate(bracket[0], bracket_f[0], bracket_gtd[0], bracket[1], bracket_f[1], bracket_gtd[1])
        # torch's safeguard: stay at least 10% of the bracket away from its ends
        eps = 0.1 * (max(bracket) - min(bracket))
        if min(max(bracket) - t, t - min(bracket)) < eps:
            if insuf_progress or t >= max(bracket) or t <= min(bracket):
                if abs(t - max(bracket)) < abs(t - min(bracket)):
                    t = max(bracket) - eps
                else:
                    t = min(bracket) + eps
                insuf_progress = False
            else:
                insuf_progress = True
        else:
            insuf_progress = False
        f_new, g_new = obj_func(x, t, d)
        ls_func_evals += 1
        gtd_new = _dot(g_new, d)
        ls_iter += 1

        if f_new > (f + c1 * t * gtd) or f_new >= bracket_f[low_pos]:
            bracket[high_pos], bracket_f[high_pos], bracket_g[high_pos] = t, f_new, g_new
            bracket_gtd[high_pos] = gtd_new
            low_pos, high_pos = (0, 1) if bracket_f[0] <= bracket_f[1] else (1, 0)
        else:
            if abs(gtd_new) <= -c2 * gtd:
                done = True
            elif gtd_new * (bracket[high_pos] - bracket[low_pos]) >= 0:
                bracket[high_pos] = bracket[low_pos]
                bracket_f[high_pos] = bracket_f[low_pos]
                bracket_g[high_pos] = bracket_g[low_pos]
                bracket_gtd[high_pos] = bracket_gtd[low_pos]
            bracket[low_pos], bracket_f[low_pos], bracket_g[low_pos] = t, f_new, g_new
            bracket_gtd[low_pos] = gtd_new

    return bracket_f[low_pos], bracket_g[low_pos], bracket[low_pos], ls_func_evals


@dataclass(frozen=True)
class LBFGS:
    """``torch.optim.LBFGS`` for JAX: ``init(params)`` and ``step(params, state, value_and_grad_fn)``.

    Build it with :func:`lbfgs`. torch's ``optimizer.step(closure)`` becomes::

        value_and_grad_fn = jax.jit(jax.value_and_grad(loss_fn))  # the closure: params -> (loss, grads)
        params, state, loss = optimizer.step(params, state, value_and_grad_fn)

    ``loss`` is the loss at the params the step started from, as torch's
    ``step`` returns. The step runs torch's Python loop on the host (its
    branches depend on the values), calling ``value_and_grad_fn`` up to
    ``max_eval`` times; jit ``value_and_grad_fn``, not the step.
    """

    lr: float
    max_iter: int
    max_eval: int
    tolerance_grad: float
    tolerance_change: float
    history_size: int
    line_search_fn: str | None

    def init(self, params) -> LBFGSState:
        """The empty state (torch creates it at the first step)."""
        for leaf in jax.tree.leaves(params):
            if jnp.iscomplexobj(leaf):
                raise ValueError(
                    f"lbfgs got a complex parameter of dtype {leaf.dtype}; jaxnets' lbfgs takes real parameters "
                    "only. Split it into real and imaginary parts."
                )
        return LBFGSState()

    def step(self, params, state: LBFGSState, value_and_grad_fn: Callable):
        """One ``torch.optim.LBFGS.step(closure)``: up to ``max_iter`` iterations.

        Args:
          params: the parameter pytree.
          state: from :meth:`init` or the previous step.
          value_and_grad_fn: ``params -> (loss, grads)``, e.g.
            ``jax.value_and_grad(loss_fn)``; torch's closure.

        Returns:
          ``(params, state, loss)``: the new params and state, and the loss at
          the old params.
        """
        if not callable(value_and_grad_fn):
            raise TypeError(
                f"lbfgs.step got value_and_grad_fn={value_and_grad_fn!r}; expected a callable params -> (loss, "
                "grads), torch's closure. Pass e.g. jax.value_and_grad(loss_fn)."
            )
        x, unravel = ravel_pytree(params)

        def evaluate(flat):
            loss, grads = value_and_grad_fn(unravel(flat))
            return float(loss), ravel_pytree(grads)[0]

        lr, max_iter, max_eval = self.lr, self.max_iter, self.max_eval
        tolerance_grad, tolerance_change, history_size = self.tolerance_grad, self.tolerance_change, self.history_size
        func_evals, state_n_iter = state.func_evals, state.n_iter

        orig_loss, flat_grad = evaluate(x)
        loss = orig_loss
        current_evals = 1
        func_evals += 1
        if float(jnp.max(jnp.abs(flat_grad))) <= tolerance_grad:  # optimal condition
            return params, _replace(state, func_evals=func_evals), orig_loss

        d, t, H_diag = state.d, state.t, state.H_diag
        old_dirs, old_stps, ro = list(state.old_dirs), list(state.old_stps), list(state.ro)
        prev_flat_grad, prev_loss = state.prev_flat_grad, state.prev_loss

        n_iter = 0
        while n_iter < max_iter:
            n_iter += 1
            state_n_iter += 1
            # the descent direction
            if state_n_iter == 1:
                d = -flat_grad
                old_dirs, old_stps, ro = [], [], []
                H_diag = 1
            else:
                y = flat_grad - prev_flat_grad
                s = d * t
                ys = jnp.dot(y, s)
                if ys > 1e-10:  # a curvature pair: update the memory
                    if len(old_dirs) == history_size:
                        old_dirs.pop(0)
                        old_stps.pop(0)
                        ro.pop(0)
                    old_dirs.append(y)
                    old_stps.append(s)
                    ro.append(1.0 / ys)
                    H_diag = ys / jnp.dot(y, y)
                # two-loop recursion: d = -H g
                num_old = len(old_dirs)
                al = [None] * num_old
                q = -flat_grad
                for i in range(num_old - 1, -1, -1):
                    al[i] = jnp.dot(old_stps[i], q) * ro[i]
                    q = q - al[i] * old_dirs[i]
                r = q * H_diag
                for i in range(num_old):
                    be_i = jnp.dot(old_dirs[i], r) * ro[i]
                    r = r + (al[i] - be_i) * old_stps[i]
                d = r

            prev_flat_grad = flat_grad
            prev_loss = loss
            # the step length
            if state_n_iter == 1:
                t = min(1.0, 1.0 / float(jnp.sum(jnp.abs(flat_grad)))) * lr
            else:
                t = lr
            gtd = _dot(flat_grad, d)  # directional derivative
            if gtd > -tolerance_change:
                break

            ls_func_evals = 0
            if self.line_search_fn is not None:

                def obj_func(x0, step_t, direction):
                    return evaluate(x0 + step_t * direction)

                loss, flat_grad, t, ls_func_evals = _strong_wolfe(
                    obj_func, x, t, d, loss, flat_grad, gtd, max_ls=max_eval - current_evals
                )
                x = x + t * d
                opt_cond = float(jnp.max(jnp.abs(flat_grad))) <= tolerance_grad
            else:
                x = x + t * d  # a fixed step
                opt_cond = False
                if n_iter != max_iter:
                    # torch re-evaluates unless this is the last iteration
                    loss, flat_grad = evaluate(x)
                    opt_cond = float(jnp.max(jnp.abs(flat_grad))) <= tolerance_grad
                    ls_func_evals = 1
            current_evals += ls_func_evals
            func_evals += ls_func_evals

            # the stopping conditions, in torch's order
            if n_iter == max_iter:
                break
            if current_evals >= max_eval:
                break
            if opt_cond:
                break
            if float(jnp.max(jnp.abs(d * t))) <= tolerance_change:
                break
            if abs(loss - prev_loss) < tolerance_change:
                break

        new_state = LBFGSState(
            func_evals=func_evals,
            n_iter=state_n_iter,
            d=d,
            t=t,
            old_dirs=tuple(old_dirs),
            old_stps=tuple(old_stps),
            ro=tuple(ro),
            H_diag=H_diag,
            prev_flat_grad=prev_flat_grad,
            prev_loss=prev_loss,
        )
        return unravel(x), new_state, orig_loss


def _replace(state: LBFGSState, **changes) -> LBFGSState:
    return LBFGSState(**{**state.__dict__, **changes})


def lbfgs(
    lr: float = 1,
    max_iter: int = 20,
    max_eval: int | None = None,
    tolerance_grad: float = 1e-7,
    tolerance_change: float = 1e-9,
    history_size: int = 100,
    line_search_fn: str | None = None,
) -> LBFGS:
    """L-BFGS, step for step as ``torch.optim.LBFGS``.

    Not an optax transformation: torch's step evaluates the loss many times
    (its closure), so this one takes ``value_and_grad_fn`` (see :class:`LBFGS`)::

        optimizer = jaxnets.optim.lbfgs(lr=1, line_search_fn="strong_wolfe")
        state = optimizer.init(params)
        for _ in range(steps):  # torch: loss = optimizer.step(closure)
            params, state, loss = optimizer.step(params, state, jax.jit(jax.value_and_grad(loss_fn)))

    Each step runs up to ``max_iter`` iterations: the two-loop recursion over
    the last ``history_size`` curvature pairs (kept when ``y . s > 1e-10``),
    a first step of ``min(1, 1 / |g|_1) * lr`` and then ``lr``, either fixed
    (``line_search_fn=None``) or from torch's strong Wolfe line search
    (``c1=1e-4, c2=0.9``, at most ``max_eval - evaluations so far`` trials);
    it stops at torch's conditions (``max|g| <= tolerance_grad``, a change of
    loss or step below ``tolerance_change``, ``max_iter``, ``max_eval``).
    Scalars are Python floats (float64), as torch's are for float64
    parameters; for float32 parameters torch keeps some of them in float32,
    so float32 runs agree to float32 precision only.

    Compared with ``optax.lbfgs``: optax makes one iteration per ``update``,
    scales the first direction differently, uses a zoom line search with other
    defaults and keeps its memory in a fixed-size ring; its trajectory is not
    torch's.

    Args:
      lr: learning rate (the step length, or the line search's first trial), >= 0.
      max_iter: iterations per step, >= 1.
      max_eval: loss evaluations per step; ``None`` for ``max_iter * 5 // 4``.
      tolerance_grad: stop when the largest gradient entry is at most this.
      tolerance_change: stop when the loss or the step changes less than this.
      history_size: curvature pairs kept, >= 1.
      line_search_fn: ``None`` or ``"strong_wolfe"``.

    Returns:
      An :class:`LBFGS` with ``init`` and ``step``.

    Raises:
      ValueError: for a negative ``lr`` (as torch) and for the other
        arguments torch would fail on only later (a bad ``line_search_fn`` at
        the first step, ``history_size=0`` at the first curvature pair).
    """
    name = "lbfgs"
    lr = check_lr(name, "torch.optim.LBFGS", lr)
    if callable(lr):
        raise ValueError(
            "lbfgs got a schedule as lr; torch.optim.LBFGS reads one lr per step(closure) call, so build a new "
            "lbfgs(lr=...) when the lr changes, or pass a number."
        )
    for arg, value in (("max_iter", max_iter), ("history_size", history_size)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"{name} got {arg}={value!r}; expected an integer >= 1. Pass e.g. {arg}=20.")
    if max_eval is None:
        max_eval = max_iter * 5 // 4
    if isinstance(max_eval, bool) or not isinstance(max_eval, numbers.Integral) or max_eval < 1:
        raise ValueError(f"{name} got max_eval={max_eval!r}; expected an integer >= 1 or None (for max_iter * 5 // 4).")
    if line_search_fn not in (None, "strong_wolfe"):
        raise ValueError(
            f"{name} got line_search_fn={line_search_fn!r}; expected None or 'strong_wolfe', the two that "
            "torch.optim.LBFGS supports."
        )
    for arg, value in (("tolerance_grad", tolerance_grad), ("tolerance_change", tolerance_change)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ValueError(f"{name} got {arg}={value!r}; expected a number, e.g. {arg}=1e-7.")
    return LBFGS(
        lr=lr,
        max_iter=int(max_iter),
        max_eval=int(max_eval),
        tolerance_grad=float(tolerance_grad),
        tolerance_change=float(tolerance_change),
        history_size=int(history_size),
        line_search_fn=line_search_fn,
    )
