"""The experiment app: ``cascade`` command line, configured runs, sweep jobs, reports, plots."""
