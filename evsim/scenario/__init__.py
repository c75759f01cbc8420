"""Scenarios: TOML files that describe a whole network and what happens to it, run on a world.

Theory of operation. A scenario file is data with a seed. :mod:`~evsim.scenario.loader` reads it into the
frozen :mod:`~evsim.scenario.model` (three passes: TOML syntax, every table's fields, whole-scenario
checks; the section readers are :mod:`~evsim.scenario.read_tls`, :mod:`~evsim.scenario.read_nodes`,
:mod:`~evsim.scenario.passes` and :mod:`~evsim.scenario.read_timeline`, on the shared machinery of
:mod:`~evsim.scenario.reader` and the keys of :mod:`~evsim.scenario.vocabulary`); every error names the
file, line, field and a fix. :mod:`~evsim.scenario.runner` translates a loaded scenario into calls on an
:func:`evsim.open_world` world, :mod:`~evsim.scenario.golden` compares the runs of shipped scenarios with
their golden logs, and :mod:`~evsim.scenario.cli` holds the ``run`` / ``validate`` / ``report`` commands.
"""
