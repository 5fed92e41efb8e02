"""Synthetic traffic for the discount demo (``buttress demo --traffic``).

- :mod:`~buttress.demo.traffic.mix`: what to send: the request kinds, their mix, the episodes
- :mod:`~buttress.demo.traffic.driver`: sending it open-loop and collecting the outcomes
- :mod:`~buttress.demo.traffic.stats`: the tally of outcomes, turned into reports
- :mod:`~buttress.demo.traffic.display`: the live terminal view, the log line and the summary
"""
