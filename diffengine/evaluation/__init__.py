"""Evaluation: ShapesBench's judge and benchmark, VAE reconstruction, CLIP score."""
