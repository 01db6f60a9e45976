"""Monitoring: profiles of data at each place it passes, drift and performance checks, and
monitors (named checks on a schedule or on each new commit / score job) whose breaches
raise alerts.

``types.py`` holds the value objects, ``service.py`` the monitors' endpoints,
``alerts.py`` the alerts' webhook delivery, ``loop.py`` the scheduler ``plinth server``
runs. Nothing heavy is imported here.
"""
