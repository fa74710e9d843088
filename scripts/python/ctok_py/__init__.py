"""ctok Python side: FashionWorld generator, default-model trainer and exporters."""
