"""The search policies by ``config.method``: one module each, peers that never import each other.

Each module is named after its method: ``config.method='lth'`` runs ``jst.searches.lth``, ``'juvenile'`` runs
``jst.searches.juvenile``. A new policy is one module with ``run(ctx) -> records`` beside them, and one entry
here (and in ``configuration.Method``).
"""

from __future__ import annotations

import typing
from typing import Any, Callable

from jst.run import configuration
from jst.run import context as context_lib
from jst.searches import juvenile
from jst.searches import lth

SEARCHES: dict[str, Callable[[context_lib.RunContext], list[dict[str, Any]]]] = {
    'lth': lth.run,
    'juvenile': juvenile.run,
}
assert tuple(SEARCHES) == typing.get_args(configuration.Method), 'configuration.Method and SEARCHES differ'


def run(ctx: context_lib.RunContext) -> list[dict[str, Any]]:
    """Runs (or resumes) ``ctx.plan.method``'s search; returns its summary records."""
    return SEARCHES[ctx.plan.method](ctx)
