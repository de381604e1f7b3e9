"""Networks from structure specs: ``specs`` (the families and what the searches ask of them) and ``networks``
(the pure Flax modules, their initialisation and shapes). Imports only ``jst.ops``."""
