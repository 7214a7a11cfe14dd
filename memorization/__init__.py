"""Memorization of training examples, one job per module.

* ``estimator``: the subsampled memorization estimator (subsets, shards, progress and score files);
* ``scores``: reading memorization score files (published or computed) and proxy files;
* ``proxies``: the one registry of memorization proxies (names, signs, producers);
* ``learning_events``: the learning-event proxies, recorded while pretraining;
* ``computed_proxies``: holdout retraining and loss curvature.
"""
