"""The default FashionWorld models: nets, data, training, evaluation, export, model card.

Entry point: ``python3 -m ctok_py.train_default``."""
