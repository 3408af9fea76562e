"""Adaptive λ (`l2.adapt: hypergradient`, experimental): λ follows the gradient of a held-out loss
during training, first order through the last update only (Luketina et al., ICML 2016, "T1–T2").

Every `every` steps, after the optimizer's step θ → θ₊, one extra forward and backward on a
held-out minibatch gives g = ∇L_held(θ₊), and

    dL_held/dλ_g ≈ ⟨g, ∂θ₊/∂λ_g⟩ = −η·c·⟨g, d_g⟩        (summed over group g's parameters)

where θ is the weights before the step (decay included), η the learning rate, and (d, c) the
direction λ acted along in that step, with the optimizer's preconditioner held fixed:

    decoupled (AdamW, SGDW, RMSprop-W)  θ₊ = θ − ηλθ − η·u(g_data)       d = θ,               c = 1
    penalty / weight_decay, sgd         θ₊ = θ − η·(b + g_data + λθ)     d = θ,               c = 1 (+μ nesterov)
    penalty / weight_decay, adam(w)     v̂ = v/(1−β₂ᵗ) held fixed          d = θ/(√v̂ + ε),      c = (1−β₁)/(1−β₁ᵗ)
    penalty / weight_decay, rmsprop     v held fixed                     d = θ/(√v + ε),      c = 1
    penalty / weight_decay, adagrad     Σg² held fixed                   d = θ/(√Σg² + ε),    c = 1

(b: the momentum buffer before this step, which λ does not change.) Gradient clipping's factor is
held fixed too. No double backward, so the held-out pass runs under cuDNN like any training step.

λ lives in log space: h = λ·dL/dλ = dL/d log λ, and log λ takes an Adam step on h (β = 0.9,
0.99): the step is about `lr` when h keeps its sign and shrinks when h is noise. Its size is thus
free of the loss's and the weights' scale (raw hypergradients span orders of magnitude across
models and over a run), and a single noisy minibatch cannot throw λ far. log λ is clamped to
[min_lambda, max_lambda]. With `per_group: false` one factor scales every group's λ (entry 0,
logged `lambda`, is `l2.lambda` scaled); with `per_group: true` each `apply_to` entry has its own
(logged `lambda/<entry>`). The held-out minibatches are taken in turn from a part of the training
split (`holdout`, chosen by the run seed) that the optimizer never sees; the validation split
stays for early stopping and selection. The held-out pass runs in the model's training mode
(cuDNN's RNN backward needs it), so with dropout it draws dropout masks like a training step.
"""

from __future__ import annotations

import math
from dataclasses import replace
from itertools import islice
from typing import Any

import torch

from .config import L2Config, OptimizerConfig
from .data import Split, Task
from .evaluate import build_loss
from .optim import decays_in_optimizer
from .regularization import L2Group, L2Penalty
from .checkpoints import CheckpointError

BETAS = (0.9, 0.99)  # Adam's moment decays, for the step in log λ
TINY = 1e-30  # keeps the normalisation finite when every hypergradient so far was 0
FD_STEP = 1e-3  # the implicit horizon's finite-difference step, relative to ‖θ‖ (float32-safe)


def hold_out(train: Split, fraction: float, seed: int) -> tuple[Split, Split]:
    """(the training split less the held-out part, the held-out part), the same for a seed."""
    return train.hold_out(fraction, torch.Generator().manual_seed(seed))


class LambdaAdapter:
    """The adapted λs, written back to the groups, the penalty and the optimizer after each update."""

    def __init__(
        self,
        l2: L2Config,
        optimizer_cfg: OptimizerConfig,
        groups: list[L2Group],
        penalty: L2Penalty,
        optimizer: torch.optim.Optimizer,
        holdout: Split,
        task: Task,
        batch_size: int,
    ):
        adapt = l2.adapt
        self.every, self.lr, self.horizon, self.terms = adapt.every, adapt.lr, adapt.horizon, adapt.terms
        self.bounds = (math.log(adapt.min_lambda), math.log(adapt.max_lambda))
        self.groups, self.penalty, self.optimizer = groups, penalty, optimizer
        self.holdout, self.batch_size, self.loss_fn = holdout, min(batch_size, len(holdout)), build_loss(task)
        self.in_optimizer = decays_in_optimizer(optimizer_cfg, l2)
        self.preconditioner = "none" if l2.mode == "decoupled" else optimizer_cfg.name
        self.scale = 1.0 + optimizer_cfg.momentum if optimizer_cfg.nesterov else 1.0
        if adapt.per_group:  # entry k is group k's own λ
            self.entry, self.ratio = list(range(len(groups))), [1.0] * len(groups)
            self.names = [f"lambda/{g.label}" for g in groups]
            start = [g.lam for g in groups]
        else:  # entry 0 is l2.lambda; group g's λ is ratio_g times it
            self.entry, self.ratio = [0] * len(groups), [g.lam / l2.lambda_ for g in groups]
            self.names, start = ["lambda"], [l2.lambda_]
        self.log_lambda = [math.log(v) for v in start]
        self.moments = [[0.0, 0.0] for _ in start]
        self.updates = 0
        self.params = [p for g in groups for p in g.params]
        self.started = adapt.start == "begin"

    def due(self, step: int) -> bool:
        """Whether optimizer step `step` (counted from 1) is followed by an update."""
        return self.started and step % self.every == 0

    def observe(self, history: list[dict[str, Any]]) -> None:
        """`start: plateau`: λ moves once an epoch's validation loss did not beat the best before
        it. Read from the epochs logged so far, so a resumed run decides as the unbroken one did."""
        losses = [row["val_loss"] for row in history]
        self.started = self.started or any(v >= min(losses[:i]) for i, v in enumerate(losses) if i)

    @torch.no_grad()
    def snapshot(self) -> list[torch.Tensor]:
        """θ before the step (and before decoupled decay): the direction λ acts along."""
        return [p.detach().clone() for p in self.params]

    def held_out_batch(self, index: int):
        """The held-out minibatch of update `index`: the held-out part's batches in turn."""
        count = self.holdout.num_batches(self.batch_size)
        return next(islice(self.holdout.batches(self.batch_size), index % count, None))

    def held_out_gradient(self, model: torch.nn.Module, index: int) -> list[torch.Tensor]:
        """∇_θ L_held at the current weights, for the penalized parameters (zeros where unused)."""
        batch = self.held_out_batch(index)
        outputs, _ = model(batch.inputs, batch.lengths, None)
        loss = self.loss_fn(outputs, batch.targets)
        grads = torch.autograd.grad(loss, self.params, allow_unused=True)
        return [torch.zeros_like(p) if g is None else g for g, p in zip(grads, self.params)]

    @torch.no_grad()
    def hypergradients(self, model: torch.nn.Module, before: list[torch.Tensor], index: int) -> torch.Tensor:
        """dL_held/dλ_g for every group (on the device), by the table in the module docstring."""
        with torch.enable_grad():
            grads = self.held_out_gradient(model, index)
        lr = self.optimizer.param_groups[0]["lr"]
        dots = torch.stack([torch.vdot(g.flatten(), d.flatten()) for g, d in zip(grads, self.directions(before))])
        sizes = [len(group.params) for group in self.groups]
        return torch.stack([part.sum() for part in dots.split(sizes)]) * (-lr * self.scale)

    def directions(self, before: list[torch.Tensor]) -> list[torch.Tensor]:
        """d·c per parameter: θ, or θ over the optimizer's current denominator (optimizer group g
        holds L2Group g's parameters, as `optim.param_groups` builds them)."""
        if self.preconditioner in ("none", "sgd"):
            return before
        groups = [g for g, group in zip(self.optimizer.param_groups, self.groups) for _ in group.params]
        out = []
        for theta, param, group in zip(before, self.params, groups):
            state = self.optimizer.state[param]
            if self.preconditioner in ("adam", "adamw"):
                beta1, beta2 = group["betas"]
                step = float(state["step"])
                v_hat = state["exp_avg_sq"] / (1 - beta2**step)
                out.append(theta / (v_hat.sqrt() + group["eps"]) * ((1 - beta1) / (1 - beta1**step)))
            else:  # rmsprop: square_avg, adagrad: sum (lr_decay 0)
                key = "square_avg" if self.preconditioner == "rmsprop" else "sum"
                out.append(theta / (state[key].sqrt() + group["eps"]))
        return out

    def implicit_hypergradients(self, model: torch.nn.Module, batch: Any, index: int) -> torch.Tensor:
        """dL_held/dλ_g at the training loss's stationary point (the implicit function theorem,
        Lorraine et al. 2020): θ*(λ) solves ∇L_data + λθ = 0, so dθ*/dλ_g = −H⁻¹θ_g, and

            dL_held/dλ_g = −⟨H⁻¹ ∇L_held, θ_g⟩,    H = ∇²L_data + diag(λ)

        with H⁻¹v from `terms` Neumann terms, α·Σ_j (I − αH)^j v. H·v is a finite difference of
        two data-loss gradients on this step's training minibatch (no double backward, so it runs
        under cuDNN too); α is 1/(2ρ), ρ = ‖H·v₀‖/‖v₀‖, and the series stops where a term grows.
        Where one step sees only λ's immediate cost (shrinking weights the next batch wants), this
        sees where training settles: the short-horizon bias toward λ = 0 goes."""
        with torch.enable_grad():
            held = self.held_out_gradient(model, index)
        theta = [p.detach().clone() for p in self.params]
        lams = [g.lam for g in self.groups for _ in g.params]
        with torch.enable_grad():
            base = self.data_gradient(model, batch)

        def hessian_times(v: list[torch.Tensor]) -> list[torch.Tensor]:
            norm = torch.sqrt(sum((x * x).sum() for x in v)).item()
            scale = max(1.0, torch.sqrt(sum((t * t).sum() for t in theta)).item())
            eps = FD_STEP * scale / max(norm, TINY)
            with torch.no_grad():
                for p, t, x in zip(self.params, theta, v):
                    p.copy_(t + eps * x)
            with torch.enable_grad():
                moved = self.data_gradient(model, batch)
            with torch.no_grad():
                for p, t in zip(self.params, theta):
                    p.copy_(t)  # exactly the weights the step left
            return [(m - b) / eps + lam * x for m, b, x, lam in zip(moved, base, v, lams)]

        def norm(v: list[torch.Tensor]) -> float:
            return math.sqrt(sum(float((x * x).sum()) for x in v))

        v, total = held, [x.clone() for x in held]
        hv = hessian_times(v)
        rho = norm(hv) / max(norm(v), TINY)
        alpha = 1.0 / (2.0 * max(rho, TINY))
        for _ in range(self.terms):
            nxt = [x - alpha * h for x, h in zip(v, hv)]
            if norm(nxt) > norm(v):  # a direction the series would blow up along: stop here
                break
            v = nxt
            total = [t + x for t, x in zip(total, v)]
            hv = hessian_times(v)
        dots = torch.stack([-alpha * torch.vdot(p.flatten(), t.flatten()) for p, t in zip(total, theta)])
        sizes = [len(group.params) for group in self.groups]
        return torch.stack([part.sum() for part in dots.split(sizes)])

    def data_gradient(self, model: torch.nn.Module, batch: Any) -> list[torch.Tensor]:
        """∇_θ of the data loss on `batch`, for the penalized parameters (zeros where unused)."""
        outputs, _ = model(batch.inputs, batch.lengths, None)
        loss = self.loss_fn(outputs, batch.targets)
        grads = torch.autograd.grad(loss, self.params, allow_unused=True)
        return [torch.zeros_like(p) if g is None else g for g, p in zip(grads, self.params)]

    def update(self, model: torch.nn.Module, before: list[torch.Tensor], batch: Any = None) -> dict[str, Any]:
        """One λ update after a step (the only host read on the way); returns the new state.
        `batch`: the step's training minibatch (the implicit horizon's Hessian is taken on it)."""
        if self.horizon == "implicit":
            per_group = self.implicit_hypergradients(model, batch, self.updates).tolist()
        else:
            per_group = self.hypergradients(model, before, self.updates).tolist()
        self.updates += 1
        lams = self.lambdas()
        h = [0.0] * len(self.log_lambda)
        for g, value in enumerate(per_group):  # dL/d log λ, summed into each group's entry
            h[self.entry[g]] += lams[g] * value
        if all(math.isfinite(v) for v in h):  # a NaN held-out loss leaves λ alone (the run's check stops it)
            for k, value in enumerate(h):
                self.log_lambda[k] = self.step(k, value)
            self.write_back()
        return self.state_dict()

    def step(self, k: int, h: float) -> float:
        """log λ_k after an Adam step on h (bias-corrected moments), clamped."""
        moments, (beta1, beta2) = self.moments[k], BETAS
        moments[0] = beta1 * moments[0] + (1 - beta1) * h
        moments[1] = beta2 * moments[1] + (1 - beta2) * h * h
        mean = moments[0] / (1 - beta1**self.updates)
        rms = math.sqrt(moments[1] / (1 - beta2**self.updates))
        low, high = self.bounds
        return min(max(self.log_lambda[k] - self.lr * mean / (rms + TINY), low), high)

    def lambdas(self) -> list[float]:
        """Each group's current λ."""
        low, high = (math.exp(b) for b in self.bounds)
        return [min(max(r * math.exp(self.log_lambda[k]), low), high) for k, r in zip(self.entry, self.ratio)]

    def write_back(self) -> None:
        """Every place λ is read: the groups (decoupled decay), the penalty, the optimizer's weight_decay."""
        for g, lam in enumerate(self.lambdas()):
            self.groups[g] = replace(self.groups[g], lam=lam)
            if self.in_optimizer:
                self.optimizer.param_groups[g]["weight_decay"] = lam
        self.penalty.set_lambdas(self.groups)

    def row(self) -> dict[str, float]:
        """The metrics row's λ columns: `lambda`, or `lambda/<entry>` per group."""
        return {name: math.exp(v) for name, v in zip(self.names, self.log_lambda)}

    def state_dict(self) -> dict[str, Any]:
        return {
            "log_lambda": list(self.log_lambda),
            "moments": [list(m) for m in self.moments],
            "updates": self.updates,
        }

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        """The state from last.pt (its types checked by `state.check_resume_payload`)."""
        if len(saved["log_lambda"]) != len(self.log_lambda):
            raise CheckpointError(
                f"last.pt: resume.adapt holds {len(saved['log_lambda'])} λ, this config adapts "
                f"{len(self.log_lambda)} (l2.adapt.per_group or the groups changed)"
            )
        self.log_lambda = [float(v) for v in saved["log_lambda"]]
        self.moments = [[float(a), float(b)] for a, b in saved["moments"]]
        self.updates = int(saved["updates"])
        self.write_back()


def lambda_trajectory(history: list[dict[str, Any]]) -> dict[str, Any]:
    """summary.json's `lambda_trajectory` (λ per epoch) and `lambda_final`: plain lists and numbers
    for one shared λ, {entry: ...} per group; empty when the run did not adapt λ."""
    names = [k for k in (history[-1] if history else {}) if k == "lambda" or k.startswith("lambda/")]
    if not names:
        return {}
    if names == ["lambda"]:
        return {"lambda_trajectory": [r["lambda"] for r in history], "lambda_final": history[-1]["lambda"]}
    entries = {n.removeprefix("lambda/"): n for n in names}
    return {
        "lambda_trajectory": {e: [r[n] for r in history] for e, n in entries.items()},
        "lambda_final": {e: history[-1][n] for e, n in entries.items()},
    }


def build_adapter(
    l2: L2Config,
    optimizer_cfg: OptimizerConfig,
    groups: list[L2Group],
    penalty: L2Penalty,
    optimizer: torch.optim.Optimizer,
    holdout: Split | None,
    task: Task,
    batch_size: int,
) -> LambdaAdapter | None:
    """The adapter for `l2.adapt`, or None when λ stays fixed (then nothing else happens)."""
    if not l2.adapt.on or holdout is None:
        return None
    return LambdaAdapter(l2, optimizer_cfg, groups, penalty, optimizer, holdout, task, batch_size)
