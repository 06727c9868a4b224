"""Moved to :mod:`pyotp.dist.service_discovery` (a distribution service); this name stays
an alias of that module, so ``from pyotp.service_discovery import ServiceDiscovery`` and
anything that patches it keep working.

>>> from pyotp.service_discovery import ServiceDiscovery
"""
import sys as _sys

from .dist import service_discovery as _impl
from .dist.service_discovery import SCOPE, SERVER, ServiceDiscovery, ServiceDiscoveryError  # noqa: F401 (typing)

_sys.modules[__name__] = _impl
