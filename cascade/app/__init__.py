"""The experiment app: ``cascade`` command line, configured runs, sweep jobs, reports, plots."""
from cascade.app.naming import register_resolvers

register_resolvers()  # before any config of cascade.conf is resolved, in whatever process resolves it
