"""Bearer tokens: the process-wide cache (:mod:`.cache`), one client's view of it (:mod:`.client`)
and the optional file store shared between task processes on one worker (:mod:`.store`)."""
