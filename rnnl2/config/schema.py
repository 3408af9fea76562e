"""The validated schema of a run (`RunConfig`): data, model, L2, optimizer, training, output."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_serializer, model_validator

from ..errors import short_repr
from ..metrics import default_mode, validation_metrics
from .base import Section, Seed
from .data_kinds import DataConfig, SeedTaggingData

# -------------------------------------------------------------------------- model


NEW_MODEL_FIELDS = ("input_dropout", "locked_dropout", "weight_drop", "embedding_dropout")


def drop_defaults(section: Section, data: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    """`data` (a dump of `section`) without the fields in `names` that hold their default."""
    fields = type(section).model_fields
    for name in names:
        default = fields[name].get_default(call_default_factory=True)
        if getattr(section, name) == default:
            data.pop(fields[name].alias or name, None)
    return data


class ModelConfig(Section):
    cell: Literal["rnn", "lstm", "gru"] = "lstm"
    """Recurrent cell: PyTorch's fused nn.RNN, nn.LSTM or nn.GRU."""
    nonlinearity: Literal["tanh", "relu"] = "tanh"
    """Activation of the plain `rnn` cell (ignored by lstm and gru)."""
    hidden_size: int = Field(64, ge=1, le=65_536)
    """Units per recurrent layer (per direction)."""
    num_layers: int = Field(1, ge=1, le=64)
    """Stacked recurrent layers."""
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    """Dropout between recurrent layers and before the head (Keras: Dropout after each LSTM)."""
    bidirectional: bool = False
    """Run a second recurrent stack backwards in time and concatenate both."""
    embedding_dim: int = Field(64, ge=1, le=65_536)
    """Size of the token embedding (used only when the inputs are tokens)."""
    pooling: Literal["last", "mean", "max"] = "last"
    """How whole-sequence heads summarise the time steps (classification and forecasting)."""
    init_scale: float | None = Field(None, gt=0.0)
    """Draw every parameter from U(−s, s), as Zaremba et al. do (s = 0.1); unset: PyTorch's
    defaults (N(0, 1) embeddings, U(±1/√hidden) recurrent weights)."""
    input_dropout: float = Field(0.0, ge=0.0, lt=1.0)
    """Dropout on the recurrent stack's inputs (the embeddings, for tokens): AWD-LSTM's `dropouti`."""
    locked_dropout: bool = False
    """One dropout mask per sequence, shared by all its time steps, for `input_dropout` and `dropout`
    (variational or locked dropout: Gal & Ghahramani 2016, AWD-LSTM). Builds one recurrent module per
    layer (parameters `rnn.0.weight_hh_l0`, `rnn.1.…`; the L2 groups still find them); off keeps the
    single fused module."""
    weight_drop: float | list[float] = 0.0
    """DropConnect on the recurrent matrices `weight_hh` (AWD-LSTM's `wdrop`): in every training batch
    each weight is zeroed with probability p and the rest scaled by 1/(1 − p); the fused kernel still
    runs, on the dropped copy. A list gives one p per layer. Each p in [0, 1)."""
    embedding_dropout: float = Field(0.0, ge=0.0, lt=1.0)
    """Drop whole words: in every training batch each row of the embedding is zeroed with probability p
    and the rest scaled by 1/(1 − p) (AWD-LSTM's `dropoute`); token inputs only."""

    @field_validator("weight_drop")
    @classmethod
    def _check_weight_drop(cls, value: float | list[float]) -> float | list[float]:
        for p in value if isinstance(value, list) else [value]:
            if not 0.0 <= p < 1.0:
                raise ValueError("each p must lie in [0, 1)")
        return value

    @model_validator(mode="after")
    def _check_weight_drop_layers(self) -> "ModelConfig":
        if isinstance(self.weight_drop, list) and len(self.weight_drop) != self.num_layers:
            raise ValueError(
                f"weight_drop lists {len(self.weight_drop)} rates, but num_layers is {self.num_layers}; "
                "give one p per layer, or one number for all"
            )
        return self

    def weight_drop_rates(self) -> list[float]:
        """p of every layer."""
        return self.weight_drop if isinstance(self.weight_drop, list) else [self.weight_drop] * self.num_layers

    @model_serializer(mode="wrap")
    def _drop_default_regularizers(self, handler: Any) -> dict[str, Any]:
        """The regularizers of issue 12 are left out while off, so older configs keep their hash."""
        return drop_defaults(self, handler(self), NEW_MODEL_FIELDS)


# ----------------------------------------------------------------------------- L2

GROUPS = ("weight_ih", "weight_hh", "bias", "embedding", "head")


class AdaptConfig(Section):
    """Adaptive λ (experimental): λ follows the gradient of a held-out loss during training
    (first-order hypergradient through the last update, Luketina et al. 2016; see rnnl2/adapt.py)."""

    method: Literal["none", "hypergradient"] = "none"
    """none: λ stays as configured (today's behaviour, bit for bit); hypergradient: every `every`
    steps, one extra forward+backward on a held-out minibatch moves log λ against dL_held/dλ. λ
    then starts from `l2.lambda` (and `l2.lambdas`), which must be > 0 and within
    [min_lambda, max_lambda]: λ moves in log space, so a λ of 0 could never change and is refused."""
    every: int = Field(10, ge=1, le=1_000_000)
    """Optimizer steps between λ updates (each costs one held-out forward and backward)."""
    lr: float = Field(0.05, gt=0.0, le=10.0)
    """Step size in log λ: an update moves log λ by about `lr` while the hypergradient keeps its sign,
    less when it is noise (an Adam step on dL/d log λ)."""
    start: Literal["begin", "plateau"] = "begin"
    """When λ starts to move. begin: from the first step. plateau: from the first epoch whose
    validation loss does not beat the best so far, i.e. once the model stops merely fitting.
    While it still fits, every hypergradient (one step or implicit) says "less λ": shrinking
    weights the data still wants costs now, and the benefit comes only once it overfits; so
    from the start λ first falls by decades, then has to climb back (BENCHMARKS.md)."""
    horizon: Literal["step", "implicit"] = "step"
    """step: the hypergradient through the last update only (Luketina et al. 2016), one extra
    forward and backward per update; it sees λ's immediate cost, so it drifts toward small λ.
    implicit: at the training loss's stationary point (Lorraine et al. 2020), −⟨H⁻¹∇L_held, θ⟩
    with H⁻¹ from `terms` Neumann terms; 2 + terms forward-backward passes per update."""
    terms: int = Field(5, ge=1, le=100)
    """With `horizon: implicit`: Neumann terms for H⁻¹ (each one finite-difference H·v)."""
    holdout: Literal["val", "train"] = "val"
    """Where the hyper-loss's minibatches come from. val: the validation split, in turn, as in
    Luketina et al. 2016 (T1–T2): λ is then chosen on the same data a grid chooses it on, and no
    training data is lost; the validation metric early stopping and selection read is then
    slightly optimistic (the selection bias BENCHMARKS.md measures). train: `holdout_fraction` of
    the training split, chosen by the run seed and never trained on; validation stays untouched.
    (A number here, the older form, means `train` with that fraction.)"""
    holdout_fraction: float = Field(0.1, gt=0.0, lt=1.0)
    """With `holdout: train`: the part of the training split held out for the hyper-loss."""
    per_group: bool = False
    """One λ per `apply_to` entry (weight_ih, weight_hh, ...) instead of one shared λ."""
    min_lambda: float = Field(1e-8, gt=0.0)
    """λ is clamped to at least this."""
    max_lambda: float = Field(1.0, gt=0.0)
    """λ is clamped to at most this."""

    @model_validator(mode="before")
    @classmethod
    def _fraction_as_train(cls, data: Any) -> Any:
        """`holdout: 0.2` (a fraction, the form before `val` existed) is `train` with that fraction."""
        value = data.get("holdout") if isinstance(data, dict) else None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return {**data, "holdout": "train", "holdout_fraction": value}
        return data

    @model_validator(mode="after")
    def _check_bounds(self) -> "AdaptConfig":
        if self.min_lambda >= self.max_lambda:
            raise ValueError(f"min_lambda ({self.min_lambda:g}) must be below max_lambda ({self.max_lambda:g})")
        return self

    @property
    def on(self) -> bool:
        return self.method != "none"


class L2Config(Section):
    lambda_: float = Field(0.0, ge=0.0, alias="lambda")
    """λ in `loss = data_loss + (λ/2) · Σ θ²`, so the gradient term is λ·θ (Keras l2(x): λ = 2x)."""
    mode: Literal["penalty", "weight_decay", "decoupled"] = "penalty"
    """penalty: add (λ/2)Σθ² to the loss; weight_decay: the optimizer's coupled weight_decay=λ;
    decoupled: AdamW-style θ ← θ − lr·λ·θ."""
    apply_to: list[str] = Field(default_factory=lambda: ["weight_ih", "weight_hh", "embedding", "head"], min_length=0)
    """Penalized parameters: groups (weight_ih, weight_hh, bias, embedding, head) or globs on
    parameter names such as `rnn.weight_ih_l0*`."""
    lambdas: dict[str, Annotated[float, Field(ge=0.0)]] = Field(default_factory=dict)
    """Per-group λ (finite, >= 0) overriding `lambda` for the selected parameters a group or glob names."""
    adapt: AdaptConfig = AdaptConfig()
    """Adaptive λ during the run (`method: hypergradient`, or the shorthand `adapt: hypergradient`);
    off by default. Left out of the resolved config while at its defaults, so configs without it
    resolve (and hash) as before."""

    @field_validator("adapt", mode="before")
    @classmethod
    def _adapt_shorthand(cls, value: Any) -> Any:
        return {"method": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _check_adapt(self) -> "L2Config":
        adapt = self.adapt
        if not adapt.on:
            return self
        if not self.apply_to:
            raise ValueError("adapt needs penalized parameters, but apply_to is empty")
        for key, lam in [("lambda", self.lambda_), *((f"lambdas.{k}", v) for k, v in self.lambdas.items())]:
            if not adapt.min_lambda <= lam <= adapt.max_lambda:
                zero = " (λ moves in log space, so 0 could never change; start small, e.g. 1e-4)" if lam == 0 else ""
                raise ValueError(
                    f"{key} is {lam:g}, but with adapt on it must lie in [adapt.min_lambda, "
                    f"adapt.max_lambda] = [{adapt.min_lambda:g}, {adapt.max_lambda:g}]{zero}"
                )
        return self

    @model_serializer(mode="wrap")
    def _drop_default_adapt(self, handler: Any) -> dict[str, Any]:
        data = handler(self)
        if self.adapt == AdaptConfig():
            data.pop("adapt", None)
        return data


# ---------------------------------------------------------------- L1 and the rest


class L1Config(Section):
    """λ₁·Σ|θ| over the selected parameters; with `l2` on too, the elastic net."""

    lambda_: float = Field(0.0, ge=0.0, alias="lambda")
    """λ₁ in `loss = data_loss + λ₁ · Σ|θ|`, so the gradient term is λ₁·sign(θ) (Keras l1(x): λ₁ = x).
    Always a loss term, whatever `l2.mode` says: there is no decoupled form of L1 here."""
    apply_to: list[str] = Field(default_factory=lambda: ["weight_ih", "weight_hh", "embedding", "head"], min_length=0)
    """Penalized parameters: groups (weight_ih, weight_hh, bias, embedding, head) or globs, as in `l2`."""
    lambdas: dict[str, Annotated[float, Field(ge=0.0)]] = Field(default_factory=dict)
    """Per-group λ₁ (finite, >= 0) overriding `lambda` for the parameters a group or glob names."""

    @property
    def on(self) -> bool:
        return self.lambda_ > 0 or any(v > 0 for v in self.lambdas.values())


class MaxNormConfig(Section):
    value: float = Field(gt=0.0)
    """c: after every optimizer step each row of the selected matrices (one unit's incoming weights)
    is scaled down to a Euclidean norm of at most c (Keras `max_norm(c)`); 1-D parameters: each entry."""
    apply_to: list[str] = Field(default_factory=lambda: ["weight_ih", "weight_hh", "head"], min_length=1)
    """Constrained parameters: groups (weight_ih, weight_hh, bias, embedding, head) or globs."""


class RegularizationConfig(Section):
    """Activation regularization and the max-norm constraint (Merity et al. 2017; Srivastava et al. 2014)."""

    ar: float = Field(0.0, ge=0.0)
    """α of AR: α·mean(h²) over the last layer's outputs as they go to the head (after its dropout for
    per-step heads), over the valid (unpadded) steps; AWD-LSTM uses 2."""
    tar: float = Field(0.0, ge=0.0)
    """β of TAR: β·mean((h_t − h_{t−1})²) over the last layer's undropped outputs, over pairs of valid
    steps; AWD-LSTM uses 1."""
    max_norm: MaxNormConfig | None = None
    """Row max-norm constraint `{value: c, apply_to: [...]}`; null: off."""


# ---------------------------------------------------------------------- optimizer


class SchedulerConfig(Section):
    name: Literal["none", "step", "multistep", "cosine", "plateau"] = "none"
    """Learning-rate schedule, stepped once per epoch."""
    step_size: int = Field(10, ge=1)
    """step: epochs between decays."""
    milestones: list[Annotated[int, Field(ge=1)]] = Field(default_factory=list)
    """multistep: epochs after which the rate is multiplied by gamma (Zaremba: [4, 5, …, 12])."""
    gamma: float = Field(0.5, gt=0.0, le=1.0)
    """step, multistep and plateau: factor the learning rate is multiplied by."""
    patience: int = Field(2, ge=0)
    """plateau: epochs without improvement of the validation loss before a decay."""
    min_lr: float = Field(0.0, ge=0.0)
    """cosine and plateau: the lowest learning rate."""

    @model_validator(mode="after")
    def _check_milestones(self) -> "SchedulerConfig":
        if self.name == "multistep" and not self.milestones:
            raise ValueError("multistep needs milestones, e.g. [4, 5, 6]")
        if self.milestones != sorted(set(self.milestones)):
            raise ValueError(f"milestones must increase, got {short_repr(self.milestones)}")
        return self


class OptimizerConfig(Section):
    name: Literal["sgd", "adam", "adamw", "rmsprop", "adagrad"] = "adam"
    """Optimizer from torch.optim."""
    lr: float = Field(1e-3, gt=0.0)
    """Learning rate."""
    momentum: float = Field(0.0, ge=0.0, lt=1.0)
    """sgd and rmsprop: momentum."""
    nesterov: bool = False
    """sgd: Nesterov momentum (needs momentum > 0)."""
    betas: tuple[float, float] = (0.9, 0.999)
    """adam and adamw: decay rates of the moment estimates."""
    eps: float = Field(1e-8, gt=0.0)
    """adam, adamw, rmsprop, adagrad: term added to the denominator."""
    alpha: float = Field(0.99, gt=0.0, lt=1.0)
    """rmsprop: smoothing constant."""
    scheduler: SchedulerConfig = SchedulerConfig()
    """Learning-rate schedule."""

    @model_validator(mode="after")
    def _check_nesterov(self) -> "OptimizerConfig":
        if self.nesterov and (self.name != "sgd" or self.momentum == 0):
            raise ValueError("nesterov needs optimizer.name=sgd and momentum > 0")
        for beta in self.betas:
            if not 0.0 <= beta < 1.0:
                raise ValueError(f"betas must lie in [0, 1), got {short_repr(list(self.betas))}")
        return self


# -------------------------------------------------------------------------- train


class EarlyStoppingConfig(Section):
    metric: str = "val_loss"
    """Validation metric that picks the best checkpoint and drives early stopping; one the data
    kind logs: val_loss, and val_accuracy (tagging, classification), val_macro_f1
    (classification), val_mse/val_mae/val_rmse (regression), val_perplexity/val_bpc (text_lm)."""
    mode: Literal["min", "max"] | None = None
    """Whether a lower (min) or higher (max) value of `metric` is better; unset: the metric's own
    direction (max for accuracy and macro-F1, min for the rest). A mode against it is refused."""
    patience: int | None = Field(None, ge=1)
    """Stop after this many epochs without improvement; null never stops early."""

    @model_validator(mode="before")
    @classmethod
    def _derive_mode(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("mode") is None and isinstance(data.get("metric", "val_loss"), str):
            return {**data, "mode": default_mode(data.get("metric", "val_loss"))}
        return data

    @model_validator(mode="after")
    def _check_mode(self) -> "EarlyStoppingConfig":
        wanted = default_mode(self.metric)
        if self.mode != wanted:
            better = "higher" if wanted == "max" else "lower"
            raise ValueError(
                f"mode {self.mode} contradicts {short_repr(self.metric)}, which is better when {better}; "
                f"set mode: {wanted} or leave mode out"
            )
        return self


class TrainConfig(Section):
    epochs: int = Field(10, ge=1, le=1_000_000)
    """Passes over the training split."""
    max_steps: int | None = Field(None, ge=1)
    """Stop after this many optimizer steps in total, even mid-epoch."""
    batch_size: int = Field(32, ge=1, le=1_000_000)
    """Sequences per optimizer step."""
    clip_grad_norm: float | None = Field(None, gt=0.0)
    """Clip the global gradient norm to this bound; null disables clipping."""
    early_stopping: EarlyStoppingConfig = EarlyStoppingConfig()
    """Which validation metric is best, and when to stop."""
    eval_batch_size: int = Field(256, ge=1)
    """Sequences per batch when evaluating."""
    checkpoint_every_steps: int | None = Field(None, ge=1)
    """Also write checkpoints/last.pt every this many optimizer steps, mid-epoch, so a long epoch
    resumes (`rnnl2 train --resume`) close to where it stopped; null: only at the end of each epoch."""
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    """Autocast the forward pass and data loss to bf16 or fp16 (fp16 adds a gradient scaler); weights,
    gradients, the L2 term and logged numbers stay fp32. A combination torch cannot run exits 2."""
    deterministic: bool = False
    """torch.use_deterministic_algorithms(True), cuDNN deterministic and CUBLAS_WORKSPACE_CONFIG:
    bit-identical CUDA reruns, at some speed (an op without a deterministic kernel is an error)."""

    @model_serializer(mode="wrap")
    def _drop_new_defaults(self, handler: Any) -> dict[str, Any]:
        """`precision` and `deterministic` are left out at their defaults, so older configs keep their hash."""
        data = handler(self)
        if self.precision == "fp32":
            data.pop("precision", None)
        if not self.deterministic:
            data.pop("deterministic", None)
        return data


class OutputConfig(Section):
    save_checkpoints: bool = True
    """Write checkpoints/last.pt and checkpoints/best.pt."""
    tensorboard: bool = False
    """Also log every epoch's metrics to <run>/tensorboard/, and the config with the final metrics to
    its HParams view (needs `pip install 'rnnl2[tensorboard]'`)."""
    mlflow: bool = False
    """Also mirror the run in MLflow: the flattened config as params, every epoch's metrics, summary.json
    and config.yaml as artifacts; $MLFLOW_TRACKING_URI, else ./mlruns (needs `pip install 'rnnl2[mlflow]'`)."""

    @model_serializer(mode="wrap")
    def _drop_default_mlflow(self, handler: Any) -> dict[str, Any]:
        """Left out while off, so a config written before `mlflow` existed keeps its hash."""
        data = handler(self)
        if not self.mlflow:
            data.pop("mlflow", None)
        return data


# ---------------------------------------------------------------------------- run


class RunConfig(Section):
    name: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    """Run name; runs are written to runs/<name>/<time>-<id>/."""
    seed: Seed = 0
    """Seed of parameter initialisation, dropout and shuffling: 0 … 2**63 − 1."""
    device: str = Field("auto", pattern=r"^(auto|cpu|mps|cuda(:\d+)?)$")
    """auto (CUDA, then MPS, else CPU), cpu, mps, cuda or cuda:N."""
    data: DataConfig = Field(default_factory=SeedTaggingData)
    """The dataset; `kind` picks the variant."""
    model: ModelConfig = ModelConfig()
    """The recurrent network."""
    l2: L2Config = L2Config()
    """Which parameters get L2 regularisation, how much, and how."""
    l1: L1Config = L1Config()
    """L1 (λ₁·Σ|θ|) beside or instead of L2; off by default."""
    regularization: RegularizationConfig = RegularizationConfig()
    """AR, TAR and the max-norm constraint; off by default."""
    optimizer: OptimizerConfig = OptimizerConfig()
    """Optimizer and learning-rate schedule."""
    train: TrainConfig = TrainConfig()
    """Training loop."""
    output: OutputConfig = OutputConfig()
    """What the run folder receives."""

    @model_serializer(mode="wrap")
    def _drop_default_sections(self, handler: Any) -> dict[str, Any]:
        """`l1` and `regularization` are left out while off, so older configs keep their hash."""
        return drop_defaults(self, handler(self), ("l1", "regularization"))

    @model_validator(mode="after")
    def _check_combinations(self) -> "RunConfig":
        logged = validation_metrics(self.data.kind)
        if self.train.early_stopping.metric not in logged:
            raise ValueError(
                f"train.early_stopping.metric: {short_repr(self.train.early_stopping.metric)} is not logged for "
                f"{self.data.kind} data; choose one of {', '.join(logged)}"
            )
        if self.l2.mode == "weight_decay" and self.optimizer.name == "adamw":
            raise ValueError(
                "l2.mode=weight_decay is coupled decay, but adamw decays decoupled; "
                "use l2.mode=decoupled with adamw, or optimizer.name=adam"
            )
        if self.l2.mode == "decoupled" and self.optimizer.name == "adagrad":
            raise ValueError("l2.mode=decoupled is not defined for adagrad; use l2.mode=penalty or weight_decay")
        return self


def to_plain_dict(cfg: RunConfig) -> dict[str, Any]:
    """The config as YAML/JSON-ready builtins, with field aliases (`lambda`)."""
    return cfg.model_dump(mode="json", by_alias=True)
