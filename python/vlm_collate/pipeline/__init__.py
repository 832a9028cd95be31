"""The collate pipeline, one stage a module, each taking the processor's profile and the
options: ``media`` (load and check media), ``encode`` (render, load, one processor call,
shared by every family), ``fast_path`` (the same batch without the processor call),
``special_text`` (content never becomes structure), ``labels`` (targets from verified
markers or the exact path), ``expand`` (media placeholders and grids), ``policies``
(over-long and unlabeled samples), ``layout`` (truncate, pad, shift) and ``run`` (the
stages in order). ``sample_errors`` re-raises a processor's exception naming the sample;
``patterns`` is the seed's token-pattern search.
"""
