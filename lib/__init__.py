"""The Attention Book's small library: what several chapters share.

One idea per module. The book's machinery:

- :mod:`lib.profiles`   -- the ``smoke`` / ``cpu`` / ``gpu`` scales and how a chapter picks one
- :mod:`lib.config`     -- experiment configurations as dataclasses, normalised before hashing
- :mod:`lib.store`      -- the results store (one JSON record per normalised configuration)
- :mod:`lib.sweep`      -- a sweep's missing configurations on an executor (inline, local pool, Slurm)
- :mod:`lib.provenance` -- code version, software, hardware and timing of every record
- :mod:`lib.seeding`    -- ``seeded``: reproducible randomness that leaves the caller's RNG alone
- :mod:`lib.data`       -- MNIST and CIFAR-10 from torchvision or an offline mirror
- :mod:`lib.train`      -- the book's one training loop, ``fit``
- :mod:`lib.run`        -- run a chapter with papermill at a profile, with parameter checks
- :mod:`lib.plots`      -- plotting helpers that draw on a given ``ax``

What the homework builds:

- :mod:`lib.attention_numpy`  -- multi-head self-attention in NumPy (NNDL session 4)
- :mod:`lib.vit`, :mod:`lib.positions` -- a ViT and its six position schemes (Data Mining P1, NNDL, NYU)
- :mod:`lib.classify`         -- the ViT classification recipe and its configuration
- :mod:`lib.linear_attention` -- kernel attention, quadratic and linear (Data Mining P2)
- :mod:`lib.features`         -- random and exact feature maps, one module per problem (Data Mining P2-P4)
- :mod:`lib.recall`           -- associative recall: task, models, experiment, report (ECE 598)

Shapes use one symbol set: B batch, N tokens, D width, H heads, M features.
"""

__version__ = "0.1.0"
