"""The web dashboard: server-rendered pages over every part, served by ``plinth server``.

Each part's pages live in one module of ``plinth.ui.pages`` that exports a ``section``
(see ``sections.py``); the dashboard mounts every section it finds, so a part adds its
pages by adding its module, without touching the others. Pages call the same service
methods as the REST API, as the signed-in user, and show the same errors.
"""
