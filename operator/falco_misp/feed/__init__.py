"""The MispFeed: its spec as frozen values (:mod:`.model`) and the one parser that builds them (:mod:`.parse`)."""
