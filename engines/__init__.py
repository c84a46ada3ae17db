"""Model families, training, export and runtime backends for sonoplane.

Importing `engines` (and `engines.metadata`, `engines.zoo`, `engines.backends`) never imports
torch: the scanner-side runtime uses these modules. Training code lives in modules that do.
"""
