"""Monitoring: profiles of data at each place it passes, drift and performance checks, and
monitors (named checks on a schedule or on each new commit / score job) whose breaches
raise alerts.

``data.py`` (``MonitoringData``: late labels, performance, input drift, profiles) is what
``checks.py`` reads to evaluate each kind of monitor; ``types.py`` holds the monitors'
value objects, ``service.py`` their endpoints (``validation.py`` its argument checks,
``rows.py`` its rows), ``alerts.py`` the alerts' webhook delivery, ``loop.py`` the
scheduler ``plinth server`` runs. Nothing heavy is imported here.
"""
