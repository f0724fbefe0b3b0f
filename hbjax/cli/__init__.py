"""Command-line tools: ``hbjax-port`` (weights to an hbjax checkpoint) and ``hbjax-predict``
(classify image files with a model)."""
