"""Stage 1, where indicators come from: MISP over PyMISP (:mod:`.misp`), static feeds, exports and text lists over
http(s) or files (:mod:`.locations`, :mod:`.fetch`), all as :class:`~.attributes.Attribute` values, and the filters
applied to them (:mod:`.filters`)."""
