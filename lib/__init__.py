"""The Attention Book's small library: what several chapters share.

One idea per module:

- :mod:`lib.profiles`  -- the ``smoke`` / ``cpu`` / ``gpu`` scales and how a chapter picks one
- :mod:`lib.store`     -- the results store (one JSON record per configuration hash)
- :mod:`lib.data`      -- MNIST and CIFAR-10 from torchvision or an offline mirror
- :mod:`lib.train`     -- the book's one training loop, ``fit``
- :mod:`lib.run`       -- run a chapter with papermill at a profile, with parameter checks
- :mod:`lib.plots`     -- plotting helpers that draw on a given ``ax``
- :mod:`lib.attention_numpy` -- multi-head self-attention written in NumPy (NNDL session 4)

Shapes use one symbol set: B batch, N tokens, D width, H heads, M features.
"""

__version__ = "0.1.0"
