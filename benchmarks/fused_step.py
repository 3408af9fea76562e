"""Can a λ grid train faster fused into one process? One training step (forward, backward, Adam)
of K members of `configs/seed_lstm.yaml`'s shape (2-layer LSTM, hidden 128, input 16, 30 steps,
batch 32, 5 classes), three ways, timed side by side in one process on the same threads:

- separate:  K ordinary `nn.LSTM` models stepped one after another: what K warm workers do, less
             their process and data overhead (so this side is, if anything, favoured);
- vmap:      `torch.func.stack_module_state` + `vmap(functional_call)` over the K stacked models;
- bmm:       one hand-written LSTM whose weights are stacked [K, 4H, ·], each time step one
             batched matmul per layer for all K members (`torch.bmm`), autograd through it;
- blockdiag: one `nn.LSTM` of hidden K·H (the fused oneDNN/cuDNN kernel) whose recurrent and
             upper-layer weights are block-diagonal, member k in block k; the off-block entries
             start at zero and their gradients are masked, so they stay zero under Adam (its update
             of a zero gradient from zero moments is zero). It does K× the recurrent FLOPs.

Every member has its own λ (penalty mode on every weight), so the gradients differ as in a
grid. Prints the median ms per step of each over --repeats, and the ratio to `separate`.

    python benchmarks/fused_step.py --members 8 --threads 2
    python benchmarks/fused_step.py --members 8 32 128 --device cuda   # on a GPU (benchmarks/gpu.sh)
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time

import torch
from torch import nn

INPUT, HIDDEN, LAYERS, STEPS, BATCH, CLASSES = 16, 128, 2, 30, 32, 5


class Member(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.LSTM(INPUT, HIDDEN, LAYERS, batch_first=True)
        self.head = nn.Linear(HIDDEN, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.rnn(x)[0])


def loss_of(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(logits.reshape(-1, CLASSES), y.reshape(-1))


def separate(models, optimizers, lambdas, x, y) -> None:
    for model, optimizer, lam in zip(models, optimizers, lambdas):
        optimizer.zero_grad(set_to_none=True)
        loss = loss_of(model(x), y) + lam / 2 * sum((p**2).sum() for p in model.parameters())
        loss.backward()
        optimizer.step()


def make_vmap(models, lambdas):
    from torch.func import functional_call, stack_module_state

    params, buffers = stack_module_state(models)
    params = {k: v.detach().requires_grad_() for k, v in params.items()}
    base = Member().to("meta")
    lam = torch.tensor(lambdas, device=next(iter(params.values())).device)

    def one(p, b, x):
        return functional_call(base, (p, b), (x,))

    optimizer = torch.optim.Adam(params.values(), lr=1e-3)

    def step(x, y) -> None:
        optimizer.zero_grad(set_to_none=True)
        logits = torch.func.vmap(one, in_dims=(0, 0, None))(params, buffers, x)
        data = torch.stack([loss_of(logits[k], y) for k in range(len(models))])
        penalty = sum((p**2).flatten(1).sum(1) for p in params.values())
        (data + lam / 2 * penalty).sum().backward()
        optimizer.step()

    return step


class StackedLSTM(nn.Module):
    """K independent LSTMs (PyTorch's gate order i, f, g, o), stepped together by bmm."""

    def __init__(self, models) -> None:
        super().__init__()
        k = len(models)
        self.k = k
        for layer in range(LAYERS):
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                stacked = torch.stack([getattr(m.rnn, f"{name}_l{layer}").detach() for m in models])
                setattr(self, f"{name}_l{layer}", nn.Parameter(stacked.clone()))
        self.head_w = nn.Parameter(torch.stack([m.head.weight.detach() for m in models]).clone())
        self.head_b = nn.Parameter(torch.stack([m.head.bias.detach() for m in models]).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, batch = self.k, x.shape[0]
        inputs = x.unsqueeze(0).expand(k, *x.shape)  # [K, B, T, I]: common random numbers, one batch
        for layer in range(LAYERS):
            w_ih, w_hh = getattr(self, f"weight_ih_l{layer}"), getattr(self, f"weight_hh_l{layer}")
            bias = (getattr(self, f"bias_ih_l{layer}") + getattr(self, f"bias_hh_l{layer}")).unsqueeze(1)
            projected = torch.bmm(inputs.reshape(k, batch * STEPS, -1), w_ih.transpose(1, 2))
            projected = projected.reshape(k, batch, STEPS, -1)
            h = x.new_zeros(k, batch, HIDDEN)
            c = x.new_zeros(k, batch, HIDDEN)
            outs = []
            for t in range(STEPS):
                gates = projected[:, :, t] + torch.bmm(h, w_hh.transpose(1, 2)) + bias
                i, f, g, o = gates.chunk(4, dim=2)
                c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                h = torch.sigmoid(o) * torch.tanh(c)
                outs.append(h)
            inputs = torch.stack(outs, dim=2)
        return torch.bmm(inputs.reshape(k, batch * STEPS, HIDDEN), self.head_w.transpose(1, 2)).reshape(
            k, batch, STEPS, CLASSES
        ) + self.head_b.unsqueeze(1).unsqueeze(1)


def make_bmm(models, lambdas):
    stacked = StackedLSTM(models).to(next(models[0].parameters()).device)
    lam = torch.tensor(lambdas, device=stacked.head_w.device)
    optimizer = torch.optim.Adam(stacked.parameters(), lr=1e-3)

    def step(x, y) -> None:
        optimizer.zero_grad(set_to_none=True)
        logits = stacked(x)
        data = torch.stack([loss_of(logits[k], y) for k in range(stacked.k)])
        penalty = sum((p**2).flatten(1).sum(1) for p in stacked.parameters())
        (data + lam / 2 * penalty).sum().backward()
        optimizer.step()

    return step, stacked


def gate_rows(k: int, members: int) -> torch.Tensor:
    """The rows of a K·H-wide LSTM weight (gates i, f, g, o, each K·H rows) that belong to member k."""
    return torch.cat(
        [torch.arange(g * members * HIDDEN + k * HIDDEN, g * members * HIDDEN + (k + 1) * HIDDEN) for g in range(4)]
    )


class BlockDiagonalLSTM(nn.Module):
    """K independent members as one wide `nn.LSTM` (hidden K·H) and one wide head, block-diagonal."""

    def __init__(self, models) -> None:
        super().__init__()
        k = self.k = len(models)
        self.rnn = nn.LSTM(INPUT, k * HIDDEN, LAYERS, batch_first=True)
        self.head = nn.Linear(k * HIDDEN, k * CLASSES)
        self.masks: dict[str, torch.Tensor] = {}
        with torch.no_grad():
            for name, wide in self.rnn.named_parameters():
                wide.zero_()
                mask = torch.zeros_like(wide, dtype=torch.bool)
                for member, model in enumerate(models):
                    rows = gate_rows(member, k)
                    own = getattr(model.rnn, name).detach().cpu()
                    if wide.dim() == 1:
                        wide[rows] = own
                        mask[rows] = True
                    elif wide.shape[1] == INPUT:  # layer 0's input weights: every member reads all of x
                        wide[rows] = own
                        mask[rows] = True
                    else:  # [4·K·H, K·H]: member k's rows read only member k's hidden units
                        cols = slice(member * HIDDEN, (member + 1) * HIDDEN)
                        wide[rows, cols] = own
                        mask[rows, cols] = True
                self.masks[f"rnn.{name}"] = mask
            self.head.weight.zero_()
            head_mask = torch.zeros_like(self.head.weight, dtype=torch.bool)
            for member, model in enumerate(models):
                rows, cols = (
                    slice(member * CLASSES, (member + 1) * CLASSES),
                    slice(member * HIDDEN, (member + 1) * HIDDEN),
                )
                self.head.weight[rows, cols] = model.head.weight.detach().cpu()
                self.head.bias[rows] = model.head.bias.detach().cpu()
                head_mask[rows, cols] = True
            self.masks["head.weight"] = head_mask
            self.masks["head.bias"] = torch.ones_like(self.head.bias, dtype=torch.bool)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.head(self.rnn(x)[0])  # [B, T, K·C]
        return logits.view(*logits.shape[:2], self.k, CLASSES).permute(2, 0, 1, 3)  # [K, B, T, C]

    def member_lambdas(self, lambdas) -> dict[str, torch.Tensor]:
        """Each parameter's λ, entry by entry: member k's λ on member k's entries, 0 off the blocks."""
        out = {}
        for name, p in self.named_parameters():
            lam = torch.zeros_like(p)
            for member, value in enumerate(lambdas):
                if name.startswith("rnn."):
                    lam[gate_rows(member, self.k)] = value
                else:
                    lam[member * CLASSES : (member + 1) * CLASSES] = value
            out[name] = lam * self.masks[name]
        return out


def make_blockdiag(models, lambdas):
    device = next(models[0].parameters()).device
    wide = BlockDiagonalLSTM(models).to(device)  # built on the CPU from copies of the members' weights
    wide.masks = {name: mask.to(device) for name, mask in wide.masks.items()}
    lam = wide.member_lambdas(lambdas)
    named = dict(wide.named_parameters())
    optimizer = torch.optim.Adam(wide.parameters(), lr=1e-3)

    def step(x, y) -> None:
        optimizer.zero_grad(set_to_none=True)
        logits = wide(x)
        data = torch.stack([loss_of(logits[k], y) for k in range(wide.k)]).sum()
        data.backward()
        with torch.no_grad():
            for name, p in named.items():
                p.grad.mul_(wide.masks[name]).add_(lam[name] * p)  # λ·θ on the member's own entries
        optimizer.step()

    return step, wide


def check_bmm_matches(models, stacked, x) -> float:
    """The largest difference between a fused form's forward and the K nn.LSTM forwards."""
    with torch.no_grad():
        fused = stacked(x)
        return max((fused[k] - m(x)).abs().max().item() for k, m in enumerate(models))


def timed(step, x, y, repeats: int, sync) -> float:
    step(x, y)  # warm-up
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        step(x, y)
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", type=int, nargs="+", default=[8])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--blockdiag-max", type=int, default=32, help="skip blockdiag above this K (its weights grow as K²)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    print(f"device {device}, {args.threads} threads, torch {torch.__version__}")
    print(
        "| members | separate ms/step | vmap ms/step (× separate) | bmm ms/step (× separate) | bmm max |Δ| "
        "| blockdiag ms/step (× separate) | blockdiag max |Δ| |"
    )
    print("|---|---|---|---|---|---|---|")
    for k in args.members:
        torch.manual_seed(0)
        x = torch.randn(BATCH, STEPS, INPUT, device=device)
        y = torch.randint(0, CLASSES, (BATCH, STEPS), device=device)
        models = [Member().to(device) for _ in range(k)]
        lambdas = [10.0 ** -(2 + 4 * i / max(k - 1, 1)) for i in range(k)]
        bmm_step, stacked = make_bmm(models, lambdas)
        wide_step, wide = make_blockdiag(models, lambdas) if k <= args.blockdiag_max else (None, None)
        optimizers = [torch.optim.Adam(m.parameters(), lr=1e-3) for m in models]
        base = timed(functools.partial(separate, models, optimizers, lambdas), x, y, args.repeats, sync)
        try:
            vmapped = f"{(v := timed(make_vmap(models, lambdas), x, y, args.repeats, sync)):.1f} ({v / base:.2f})"
        except Exception as problem:  # vmap has no batching rule for some op: say which
            vmapped = f"fails: {type(problem).__name__}: {str(problem).splitlines()[0][:60]}"
        fused = timed(bmm_step, x, y, args.repeats, sync)
        blocks = timed(wide_step, x, y, args.repeats, sync) if wide is not None else None
        # Every form took the same 1 + repeats steps from the same weights: do the members still agree?
        error = check_bmm_matches(models, stacked, x)
        if wide is not None:
            wide_cells = f"{blocks:.1f} ({blocks / base:.2f}) | {check_bmm_matches(models, wide, x):.1e}"
        else:
            wide_cells = "skipped (K > --blockdiag-max) | —"
        print(
            f"| {k} | {base:.1f} | {vmapped} | {fused:.1f} ({fused / base:.2f}) | {error:.1e} | {wide_cells} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
