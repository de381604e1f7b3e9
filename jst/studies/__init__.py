"""Published studies and their pages: ``study`` (a study's type and its records), ``catalog`` (every published study;
``catalog_mnist``, ``catalog_cifar``), ``campaign`` (trains a study part by part in ``launch/main.py`` processes: the
only module here that starts training) and ``handoff`` (a paused part carried to another machine), ``compute`` (a
study's steps, multiply-adds and budgets from its records), ``policy_pages`` and ``level_pages`` (a page of policies
x budgets, or of pruning levels with controls), ``pages`` (every page and README block) and ``results_index`` (the
index and the verdict). The statistics they quote live in ``jst.analysis``."""
