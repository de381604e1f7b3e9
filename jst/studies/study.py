"""A study: a base config, seeds, per-round budgets and policies (config overrides), and its committed records.

Its records live in ``docs/results/<name>/records/<budget>/<policy>[/<part>]/summary.json`` (as written by
``launch/main.py``); ``policy_study`` and ``level_study`` turn them into the study's Markdown page, deterministically,
so a test can regenerate the page and fail when a published number differs. ``jst/studies/catalog.py`` holds the
studies; ``campaign`` trains them part by part.
"""

from __future__ import annotations

import dataclasses
import os
from typing import NamedTuple, Sequence

from jst.run import records as records_lib
from jst.run.records import Record


class Policy(NamedTuple):
    """One arm of a study: its name (a records and workdir folder), its ``launch/main.py`` flags (``{budget}``,
    ``{total}`` and ``{rewind_3pct}`` filled per budget) and a one-line description for its page."""
    name: str
    flags: str
    description: str


@dataclasses.dataclass(frozen=True)
class Study:
    """A published (or test) study: what ``campaign`` trains and ``policy_study`` / ``level_study`` render. Its
    comparisons, headline, dense policy and extra seeds must name its policies (checked when it is made)."""
    name: str
    title: str
    config: str                        # config file, relative to the repository
    first_seed: int
    num_seeds: int
    budgets: tuple[int, ...]           # steps per round
    policies: tuple[Policy, ...]       # plain (name, flags, description) tuples become ``Policy``s
    comparisons: tuple[tuple[str, str], ...]    # (a, b): a - b at the final round, paired over seeds
    headline: tuple[str, str] = ('', '')        # the comparison the page's first sentence answers
    headline_question: str = ''
    trainings: int = 6                 # trainings per run (num_rounds + 1): ``{total}`` = trainings x budget
    notes: str = ''
    policy_seeds: tuple[tuple[str, int], ...] = ()  # (policy, num_seeds) where a policy runs more seeds
    dense_policy: str = ''             # a policy whose round 0 is the dense network: where it converges
    page: str = 'policies'             # 'policies' (policies x budgets) | 'levels' (jst.studies.level_pages)
    # Seeds per ``launch/main.py`` process: 0 = all of a policy's seeds as lanes of one process (one part per
    # cell); k = parts of k seeds run one after another, each with its own records (``seed_S`` / ``seeds_S-T``),
    # so a long campaign commits every finished part. Lane i of a run has the keys of a one-seed run of seed + i
    # (results equal up to float summation order), so this is a speed and granularity choice only.
    lanes_per_run: int = 0
    base_flags: str = ''               # flags every policy gets (before its own)
    equivalence_margin: float = 0.0    # TOST margin (accuracy fraction) for pairs that do not differ (claims)
    margin_fixed: str = ''             # when the margin was fixed, relative to the records (stated on the page)
    margin_why: str = ''               # why the margin has its size: the effect it is tied to (stated on the page)
    # (policy, source policy): ``{source}`` in the policy's flags is the source's workdir at the same budget and
    # seeds (e.g. ``--config.init_from={source}`` for the controls of a grown ticket); the campaign trains it first
    sources: tuple[tuple[str, str], ...] = ()
    # (study, policy, budget, workdir relative to the repository, seeds): a run of another study that this one's
    # policies start from (``--config.init_from``); ``launch/study.py run`` trains it first when it is missing
    prerequisite: tuple[str, str, int, str, int] | None = None
    preregistration: str = ''          # the file (relative to the repository) that fixed the design before records
    preregistered_in: str = ''         # the commit (abbreviated) that added it; tests/test_results.py checks the order
    chooses_budget: bool = False       # its dense curve picks a budget (``compute.budget_from_curve``; on its page)
    budget_if_improving: bool = False  # ... even when the curve still improves (its claims then become bounds)
    # Policies a campaign trains first, at every seed, before the others (a pre-registered fallback: the decisive
    # policies complete when compute runs short); () trains all policies seed by seed.
    run_first: tuple[str, ...] = ()

    def __post_init__(self):
        object.__setattr__(self, 'policies', tuple(Policy(*p) for p in self.policies))
        named = [*(n for pair in self.comparisons for n in pair), *(n for n in self.headline if n),
                 *([self.dense_policy] if self.dense_policy else []), *(p for p, _ in self.policy_seeds),
                 *(n for pair in self.sources for n in pair), *self.run_first]
        unknown = sorted(set(named) - set(self.policy_names))
        if unknown:
            raise ValueError(f'study {self.name!r} names {unknown}, which are not among its policies '
                             f'{self.policy_names}: fix its comparisons, headline, dense_policy, policy_seeds, '
                             'sources or run_first.')
        for policy, source in self.sources:
            if self.seeds_of(policy) != self.seeds_of(source) or self.policy_names.index(source) > \
                    self.policy_names.index(policy):
                raise ValueError(f'study {self.name!r}: source {source!r} of {policy!r} must come before it in the '
                                 'policies and run the same seeds.')
            if policy in self.run_first and (source not in self.run_first or
                                             self.run_first.index(source) > self.run_first.index(policy)):
                raise ValueError(f'study {self.name!r}: {policy!r} runs first, so its source {source!r} must be in '
                                 'run_first before it.')

    @property
    def policy_names(self) -> list[str]:
        return [p.name for p in self.policies]

    def seeds_of(self, policy: str) -> int:
        """How many seeds (from ``first_seed``) ``policy`` runs."""
        return dict(self.policy_seeds).get(policy, self.num_seeds)

    def source_workdir(self, policy: str, budget: int, root: str, part: tuple[int, int] | None = None) -> str:
        """The workdir (under ``root``) of the run whose ticket ``policy`` starts from; '' when it has none."""
        source = dict(self.sources).get(policy)
        return f'{root}/{self.workdir(source, budget, part)}' if source else ''

    def flags(self, policy: str, budget: int, root: str = 'STUDY_DIR', part: tuple[int, int] | None = None) -> str:
        """The policy's flags at ``budget`` (``--config.steps_per_round`` unless the policy sets it); ``{source}``
        is filled with ``source_workdir`` under ``root``."""
        flags = {p.name: p.flags for p in self.policies}[policy].format(
            budget=budget, total=self.trainings * budget, rewind_3pct=round(0.03 * self.trainings * budget),
            source=self.source_workdir(policy, budget, root, part))
        flags = f'{self.base_flags} {flags}'.strip()
        return flags if 'steps_per_round' in flags else f'--config.steps_per_round={budget} {flags}'

    def parts(self, policy: str) -> list[tuple[int, int]]:
        """[(first seed, number of seeds)] of the ``launch/main.py`` processes that run ``policy``'s seeds."""
        n, k = self.seeds_of(policy), self.lanes_per_run
        return [(self.first_seed + i, min(k or n, n - i)) for i in range(0, n, k or n)]

    def part_name(self, part: tuple[int, int]) -> str:
        """'' for a whole-cell part (``lanes_per_run=0``), else ``seed_S`` / ``seeds_S-T``."""
        first, n = part
        return '' if self.lanes_per_run <= 0 else f'seed_{first}' if n == 1 else f'seeds_{first}-{first + n - 1}'

    def workdir(self, policy: str, budget: int, part: tuple[int, int] | None = None) -> str:
        """``<study>/<budget>/<policy>`` (``-<n>seeds`` when the policy runs more seeds than the study; a part's
        own folder below it), relative to the studies' workdir root (``launch/study.py --workdir_root``)."""
        n = self.seeds_of(policy)
        cell = f'{self.name}/{budget}/{policy}' + ('' if n == self.num_seeds else f'-{n}seeds')
        name = self.part_name(part) if part else ''
        return f'{cell}/{name}' if name else cell

    def command(self, policy: str, budget: int, workdir: str = 'WORKDIR', part: tuple[int, int] | None = None) -> str:
        first, n = part or (self.first_seed, self.seeds_of(policy))
        return (f'python launch/main.py --config={self.config} --config.seed={first} '
                f'--config.num_seeds={n} {self.flags(policy, budget, part=part)} --workdir={workdir}')


def records_dir(results_dir: str, study: Study, budget: int, policy: str,
                part: tuple[int, int] | None = None) -> str:
    """``<results>/<study>/records/<budget>/<policy>`` (and the part's folder when seeds run in parts)."""
    cell = os.path.join(results_dir, study.name, 'records', str(budget), policy)
    name = study.part_name(part) if part else ''
    return os.path.join(cell, name) if name else cell


def load_records(results_dir: str, study: Study, controls: bool = False) -> dict[tuple[int, str], list[Record]]:
    """{(budget, policy): summary records (control 'none' unless ``controls``)} of every committed run; a cell
    run in parts joins the records of its committed parts (in seed order)."""
    out = {}
    for budget in study.budgets:
        for policy in study.policy_names:
            records = []
            for part in study.parts(policy):
                path = os.path.join(records_dir(results_dir, study, budget, policy, part), 'summary.json')
                records += [r for r in records_lib.read_summary_file(path) if controls or r['control'] == 'none']
            if records:
                out[(budget, policy)] = records
    return out


LATE_FRACTION = 0.9  # a training whose minimum validation loss lies in its last tenth counts as still improving
TRUNCATION_RULE = ('still improving at their end (minimum validation loss in the last tenth of their steps: a curve '
                   'still falling over its last evaluations counts, not only a minimum at the very last one; their '
                   'accuracy and early-stop step are bounds)')


def still_improving(record: Record, end: int = 0) -> bool:
    """Whether a training (a record) is truncated by ``TRUNCATION_RULE``; it ends at ``max(steps, end)`` (a
    rewound round starts later but ends at the round's budget)."""
    return record['best_step'] > LATE_FRACTION * max(record['steps'], end)


def final_by_seed(records: Sequence[Record]) -> dict[int, Record]:
    """{seed: the record of its last round}."""
    last: dict[int, Record] = {}
    for r in records:
        if r['seed'] not in last or r['round'] > last[r['seed']]['round']:
            last[r['seed']] = r
    return last


def lanes_phrase(study: Study) -> str:
    """How the study's seeds run: as lanes of one process, or one process (of k lanes) after another."""
    k = study.lanes_per_run
    whole = k <= 0 or k >= max(study.seeds_of(p) for p in study.policy_names)
    return ('as lanes of one process per policy and budget' if whole else 'one process per seed, one after '
            'another' if k == 1 else f'{k} as lanes per process, processes one after another')


def preregistration_sentence(study: Study) -> str:
    """The commit order a confirmatory page states (checked against ``git log`` by tests/test_results.py)."""
    if not study.preregistration:
        return ''
    records = f'docs/results/{study.name}/records'
    return (f'**Commit order.** The pre-registration (`{study.preregistration}`) was committed in '
            f'`{study.preregistered_in}`, and every record of this page after it: `git log --diff-filter=A '
            f"--format='%h %ad %s' -- {study.preregistration} {records}` lists it last.")

