"""Stronger audits of unlearning than accuracy and the SVC MIA (docs/stage_audit.md).

* :mod:`~evaluation.audits.lira`: LiRA against the unlearned model (Carlini et al. 2022;
  U-LiRA, Hayes et al. 2024): per forget example a one-sided test of "never seen" against the
  OUT shadow models, the likelihood ratio against the IN ones, TPR at low FPR and AUC.
* :mod:`~evaluation.audits.shadows`: the shadow models LiRA needs, trained with the target's
  recipe as batched ensembles and stored once under ``<ckpts>/audit/``.
* :mod:`~evaluation.audits.klom`: KLOM (Georgiev et al. 2024), the per-example KL divergence
  between the margins of unlearned and retrained models over seeds.
* :mod:`~evaluation.audits.relearn`: the relearning attack (fine-tune a few steps on part of the
  forget set, measure the accuracy that comes back on the rest).
* :mod:`~evaluation.audits.runner`, :mod:`~evaluation.audits.levels`,
  :mod:`~evaluation.audits.report`: applying them to run directories, the memorization-level
  breakdown, the tables.
"""
