"""meshlab: how an Istio sidecar captures a pod's traffic, as a model you can trace and a lab
that checks the model against the real Linux kernel.

The layers point one way: :mod:`meshlab.netfilter` knows nothing of Istio;
:mod:`meshlab.istio` builds on it; :mod:`meshlab.pod` and :mod:`meshlab.world` combine them;
lessons, pictures, widgets and the command line only read their results.
"""

from meshlab.i18n import language, set_language

__version__ = "0.1.0"

__all__ = ["__version__", "language", "set_language"]
