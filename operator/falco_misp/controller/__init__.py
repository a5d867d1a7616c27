"""The operator: kopf handlers (:mod:`.handlers`, thin), one feed's sync, rollout and cleanup as services
(:mod:`.sync`, :mod:`.cleanup`, :mod:`.ticks`, :mod:`.feeds`, :mod:`.live_sync`) and the status they write
(:mod:`.status`)."""
