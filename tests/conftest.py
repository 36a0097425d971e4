"""Hypothesis profiles for the whole suite: ``ci`` by default, ``nightly`` for long runs.

Select one with ``--hypothesis-profile=nightly`` or ``LOGBENCH_HYPOTHESIS_PROFILE=nightly``.
"""

from pytest_logbench.strategies import register_profiles

register_profiles()
