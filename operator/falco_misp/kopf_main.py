"""Entry for ``kopf run -m falco_misp.kopf_main``: the operator's handlers in kopf's default registry.

``falco-misp run`` does the same with its own options (``--log-format``, liveness endpoint, namespaces).
"""

from __future__ import annotations

import kopf

from falco_misp.controller.handlers import register

register(kopf.get_default_registry())
