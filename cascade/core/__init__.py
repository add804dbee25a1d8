"""The data model and the stage interface: candidates, datasets, stages and pipelines, fusion,
results and run files, evaluation. Depends on nothing else in cascade."""
