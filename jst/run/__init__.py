"""Run infrastructure: ``configuration`` (every knob, validated), ``context`` (what a search reads), ``workdir``
(claiming and matching a run folder), ``checkpoint_io`` and ``checkpointing`` (the on-disk schema), ``journal``
(a running search's state), ``records`` (summary.json, metrics). Imports training and the layers below."""
