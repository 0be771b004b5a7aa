"""The accuracy gate (README "Accuracy gate").

- ``metrics``: pure numpy comparisons (max_abs, mean_abs, max_rel, cosine, SNR, top-1, task accuracy)
- ``tolerances``: per-precision defaults and the spec's per-output limits (pure rules)
- ``inputs``: the spec's accuracy data or seeded random inputs per profile shape
- ``gate``: candidate choice (engine or simulated ONNX), the run, the verdict
- ``report``: ``{stem}.accuracy.json``, the manifest summary, the table
- ``junit``: the reports as JUnit XML for CI test tabs

Import the submodules directly; this package itself imports nothing heavy.
"""
