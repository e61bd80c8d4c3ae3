"""Classification of sensitive data and the strategies that mask it."""
