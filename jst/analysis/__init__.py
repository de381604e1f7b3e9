"""Results from records: ``report`` (one run or many), ``study`` (a study and its records), ``policy_study`` and
``level_study`` (its page: policies x budgets, or pruning levels with controls), ``statistics`` and ``claims``
(intervals, paired tests, Holm, equivalence), ``compute`` (steps and multiply-adds), ``figures`` (PNG plots),
``studies`` (the published studies), ``pages`` (every page and README block) and ``campaign`` (trains a study part
by part in ``launch/main.py`` processes; the only module here that starts training)."""
