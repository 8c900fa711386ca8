"""Associative recall (ECE 498/598 HW3-4), in four parts:

- :mod:`lib.recall.task`       -- the task: sequences, the fixed token embeddings, test lengths
- :mod:`lib.recall.models`     -- attention-only Transformers (learned PE, RoPE, NoPE), Mamba, the hybrid
- :mod:`lib.recall.experiment` -- one configuration (:class:`~lib.recall.experiment.RecallConfig`) trained and evaluated
- :mod:`lib.recall.report`     -- seed summaries and figures shared by the recall chapters
"""
