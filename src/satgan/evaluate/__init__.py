"""Stage 6, evaluate: how convincing are the fakes, and is the model copying its training set?

The map of this package (``stages/evaluate.py`` calls :func:`satgan.evaluate.stage.evaluate`):

- :mod:`~satgan.evaluate.params`: params.yaml's ``evaluate:`` section, typed and bounded;
- :mod:`~satgan.evaluate.stage`: the stage function: it loads and checks the inputs, runs the
  phases below and writes every output into a staging folder that replaces the eval folder as one
  step at the end (a failed or killed run leaves the previous outputs);
- :mod:`~satgan.evaluate.judge`: the judge (a small CNN told to separate held-out reals from
  fakes) and the class classifier for labelled data;
- :mod:`~satgan.evaluate.metrics`: distribution metrics (SWD, colour histograms, memorization,
  diversity);
- :mod:`~satgan.evaluate.classes`: labelled data: the one reader of prepare's labels and
  generate's classes, GAN-test / GAN-train accuracy and the per-class figures;
- :mod:`~satgan.evaluate.fid`: FID/KID through torch-fidelity's InceptionV3 (off by default);
- :mod:`~satgan.evaluate.turing`: the human Turing test (grid, answer key, ``quiz.html``,
  ``satgan quiz``);
- :mod:`~satgan.evaluate.readings`: every mark and threshold once (what each figure means, the
  judge's conclusive rule, the floors' ratios, the demo targets, the headline's figures); the
  stage, the report and ``satgan summary`` all ask it;
- :mod:`~satgan.evaluate.report`: renders ``report.html`` and writes ``headline.json`` (HTML only);
- :mod:`~satgan.evaluate.summary`: ``satgan summary``, the key figures in a terminal.

Nothing is imported here, so ``satgan summary`` and ``satgan quiz`` do not pay for torch.
"""
