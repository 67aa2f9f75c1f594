"""``consumers detect``: stateful rules over the change stream that raise one alert per incident.

Modules: ``config`` (the rules file), ``alerts`` (the alert model), ``assembler`` (events
and END records into complete transactions, in commit order), ``rules`` (the detector),
``state`` (SQLite: state + offsets + alert outbox, one transaction per batch), ``sinks``
(log, Kafka, PostgreSQL), ``runner`` (the poll loop), ``command`` (the click command).
"""
