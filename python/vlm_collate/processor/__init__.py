"""The processor: the only code that reads a processor's (or tokenizer's) attributes.

``profile.py`` resolves every fact the pipeline needs about a processor once and caches
it (:func:`profile_of`); ``family.py`` is the family table (processor class or model
type -> family); ``tokens.py`` reads token ids; ``render.py`` renders conversations with
the chat template and is the differential-rendering oracle of reply spans;
``markers.py`` derives and verifies label markers from the template; ``check.py``
reports what a template gets (:func:`check_template`).
"""
