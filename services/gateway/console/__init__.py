"""The operator web console: server-rendered pages (aiohttp-jinja2, htmx) over the same permission
table, sessions and RPCs as the API; routes in `routes.py`."""
