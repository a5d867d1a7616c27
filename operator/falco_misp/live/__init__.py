"""Live updates from MISP's ZeroMQ publisher: messages and their relevance (:mod:`.messages`, pure) and the
per-feed subscriber (:mod:`.follower`)."""
