"""The searches, peers that never import each other: ``lth`` (train, prune, reset: the lottery ticket) and
``juvenile`` (train, prune, grow, keep the weights), chosen by ``registry`` from ``config.method``; over shared
``rounds`` (one round), ``tickets`` (start and final ticket), ``prune_and_grow`` (between two juvenile rounds) and
``diagnostics`` (juvenility measures)."""
