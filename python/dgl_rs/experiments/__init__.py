"""Experiments: the synthetic benchmark behind ``dgl-rs benchmark`` and ``dgl-rs demo``.

- :mod:`~dgl_rs.experiments.entries`: the methods it compares (:data:`ENTRIES`: method,
  ``dgl-rs train`` flags, learning rate), the demo's subset (:data:`DEMO`), the paper's
  Table 3 ablations (:data:`ABLATIONS`, :data:`TABLE3`).
- :mod:`~dgl_rs.experiments.runner`: one training run per method and seed in a child
  process, its evaluation on the test splits, the learning-rate search on validation
  videos, and the whole benchmark (:func:`run_benchmark`).
- :mod:`~dgl_rs.experiments.reversal`: how often a temporal caption scores its own video
  above that video's exact time reversal (50% = blind to frame order).
- :mod:`~dgl_rs.experiments.report`: the mean over seeds, the Markdown tables (Table 1's
  layout, the README's, Table 3 beside the paper's rows), the JSON and the bar chart.
- :mod:`~dgl_rs.experiments.claims`: the paper's claims decided on the benchmark's
  per-query ranks (paired bootstrap over test queries, >= 3 seeds).

The command line (argument parsing, printing) is :mod:`dgl_rs.cli.benchmark`; nothing
here imports :mod:`dgl_rs.cli`.
"""
