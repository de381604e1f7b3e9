"""Results from records only: ``report`` (one run or many), ``study`` and ``level_study`` (results pages),
``statistics`` and ``claims`` (intervals, paired tests, Holm, equivalence), ``compute`` (steps and multiply-adds),
``figures`` (PNG plots). Reads records; never trains."""
