"""Results from records: ``statistics`` and ``claims`` (intervals, paired tests, Holm, equivalence, and the words a
result earns), ``figures`` (PNG plots), ``report`` (one run or many) and ``paired`` (the main command's paired
comparisons). The published studies, their campaigns and pages are ``jst.studies``."""
