"""Dataset rows as published -> one conversation form (a list of ``{"role", "content"}``
messages whose content items carry their media), before anything else runs.

One module per published shape (:mod:`.messages` TRL/Hugging Face, :mod:`.sharegpt`
LLaVA/ShareGPT, :mod:`.openai`, :mod:`.cauldron`, :mod:`.prompt_completion`), the
detection that picks one per row (:mod:`.detect`), what they share (:mod:`.content`),
and the row identity errors name (:mod:`.rows`). See docs/formats.md."""
