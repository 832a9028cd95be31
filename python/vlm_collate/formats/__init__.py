"""Dataset rows as published -> one conversation form (a list of ``{"role", "content"}``
messages whose content items carry their media), before anything else runs."""
