"""Compression: quantization-aware training, pruning, channel pruning."""
