"""Training: fine-tuning (and later distillation) with freezing policies, layer-wise LR, early stopping."""
