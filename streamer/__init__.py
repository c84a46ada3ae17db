"""sonoplane runtime: capture -> crop/preprocess -> infer -> smooth -> publish -> overlay.

Never imports torch: a scanner-side install is numpy, opencv, av, pyzmq, msgpack, onnxruntime.
"""
__version__ = "0.1.0"
