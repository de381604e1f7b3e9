"""The typed plan of a run's search, made once from its config (``SearchPlan.from_config``): what the searches read
instead of the ``ConfigDict`` (``RunContext.plan``). A knob a search needs is a field here, with its type."""

from __future__ import annotations

import dataclasses
import ml_collections

from jst.models import specs
from jst.ops import expand
from jst.run import configuration
from jst.training import growth
from jst.training import pruning


@dataclasses.dataclass(frozen=True)
class SearchOptions:
    """``growth='search'``: candidates (deepen; widen by each of ``widen_by``), their probe, and the limits."""

    deepen: bool
    widen_by: tuple[int, ...]
    probe_steps: int
    patience: int
    max_depth: int
    max_params: int


@dataclasses.dataclass(frozen=True)
class DiagnosticsPlan:
    """The juvenility diagnostics at the start and end of every round (``jst.searches.diagnostics``)."""

    enabled: bool
    background: bool
    probe_size: int
    minibatches: int
    hutchinson_samples: int
    rho: float
    learning_potential_steps: int


@dataclasses.dataclass(frozen=True)
class TransferPlan:
    """``init_from``: the finished run whose ticket every lane starts from ('' = none), its weights and masks."""

    source: str
    weights: str
    masks: str


@dataclasses.dataclass(frozen=True)
class TrainingPlan:
    """How every training of the run steps and evaluates (``train.make_trainer``, ``train_loop``)."""

    optimizer: str
    learning_rate: float
    momentum: float
    batch_size: int
    dataset: str       # its name: the preprocessing of the inputs
    step_loop: str     # 'scan' | 'python' | 'auto' (``train.resolve_step_loop``)
    test_at_best: bool  # eval_test == 'at_best'
    first_seed: int    # lane i trains seed first_seed + i
    conv_form: str = 'auto'  # how convolutions are computed (``jst.models.convolution.CONV_FORMS``)

    @classmethod
    def from_config(cls, c: ml_collections.ConfigDict) -> TrainingPlan:
        return cls(c.optimizer, float(c.learning_rate), float(c.momentum), int(c.batch_size), c.dataset,
                   c.step_loop, c.eval_test == 'at_best', int(c.seed), c.conv_form)


@dataclasses.dataclass(frozen=True)
class SearchPlan:
    """Everything a search reads of its run's config, typed."""

    method: str
    name: str                         # the run's label in records ('' = its method)
    num_rounds: int
    batch_size: int
    training: TrainingPlan
    controls: tuple[str, ...]         # ``config.control`` split: () or some of pruning.CONTROLS
    rewind_step: int
    prune_weights: str                # 'final' | 'best'
    data_order: str                   # 'per_round' | 'replay'
    growth: str                       # a key of prune_and_grow.GROWTH_POLICIES
    grow_position: int
    carry_optimizer_state: bool       # optimizer_state_on_growth == 'carry'
    pruning: pruning.PruningPlan
    growth_options: expand.GrowthOptions
    search: SearchOptions
    diagnostics: DiagnosticsPlan
    transfer: TransferPlan
    start_specs: tuple[tuple[str, specs.ModelSpec], ...]  # (method, the architecture it starts from)
    checkpoint_every_epochs: int
    checkpoint_min_interval_s: float
    overwrite: bool

    def start_spec(self, method: str) -> specs.ModelSpec:
        return dict(self.start_specs)[method]

    @classmethod
    def from_config(cls, c: ml_collections.ConfigDict) -> SearchPlan:
        s = c.search
        return cls(
            method=c.method, name=c.name, num_rounds=int(c.num_rounds), batch_size=int(c.batch_size),
            training=TrainingPlan.from_config(c),
            controls=pruning.control_names(c.control), rewind_step=int(c.rewind_step), prune_weights=c.prune_weights,
            data_order=c.data_order, growth=c.growth, grow_position=int(c.grow_position),
            carry_optimizer_state=c.optimizer_state_on_growth == 'carry',
            pruning=pruning.PruningPlan.from_config(c), growth_options=growth.options_from_config(c),
            search=SearchOptions(bool(s.deepen), tuple(int(w) for w in s.widen_by), int(s.probe_steps),
                                 int(s.patience), int(s.max_depth), int(s.max_params)),
            diagnostics=DiagnosticsPlan(bool(c.juvenility), bool(c.juvenility_background),
                                        int(c.juvenility_probe_size), int(c.juvenility_minibatches),
                                        int(c.juvenility_hutchinson_samples), float(c.juvenility_rho),
                                        int(c.learning_potential_steps)),
            transfer=TransferPlan(c.init_from, c.init_from_weights, c.init_from_masks),
            start_specs=tuple((m, configuration.start_spec(c, m)) for m in ('lth', 'juvenile')),
            checkpoint_every_epochs=int(c.checkpoint_every_epochs),
            checkpoint_min_interval_s=float(c.checkpoint_min_interval_s), overwrite=bool(c.overwrite))

