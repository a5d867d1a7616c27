"""Stage 2, attributes to indicators (pure): validation, classification, carving, collapse and caps
(:mod:`.builder`), with the one IP parser and domain normaliser of :mod:`falco_misp.values`."""
