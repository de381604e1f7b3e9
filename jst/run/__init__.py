"""Run infrastructure: ``configuration`` (every knob, validated), ``context`` (what a search reads), ``workdir``
(claiming and matching a run folder), ``checkpoint_io`` and ``checkpointing`` (the on-disk schema, resumption),
``records`` (summary.json, metrics). Imports training and the layers below."""
