"""cascade's Hydra configs (installed as the package ``cascade.conf``; Hydra reads ``pkg://cascade.conf``)."""
