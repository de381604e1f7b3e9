"""Run infrastructure: ``configuration`` (every knob, validated), ``plans`` (the typed plan made from it once),
``context`` (what a search reads) with its ``compile_cache``, ``workdir`` (claiming and matching a run folder),
``checkpoint_io`` and ``checkpointing`` (the on-disk schema), ``journal`` (a running search's state and its
stages), ``records`` (summary.json, metrics). Imports training and the layers below."""
