"""Alerts: deciding which are due (incidents), their texts, sending them, and the ingress-side watcher.

Shared by the workers' alert job (workers/alerts.py) and ``relay serve`` (relay/alerting/watch.py),
which sends the alerts no worker can: ``no_worker`` and ``redis_unreachable``.
"""
