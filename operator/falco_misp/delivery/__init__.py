"""Stage 4, rules to Falco: the guard against a collapsed list (:mod:`.guard`), ConfigMaps (:mod:`.configmaps`),
the DaemonSet rollout (:mod:`.rollout`), the Kubernetes client (:mod:`.kube`), and files for the CLI
(:mod:`.files`)."""
