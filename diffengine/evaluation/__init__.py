"""Evaluation: ShapesBench's judge, benchmark and language-model probe, VAE reconstruction, CLIP score."""
