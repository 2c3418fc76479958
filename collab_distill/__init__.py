"""collab-distill: LiDAR-anchored distillation for robust 2D foundation features."""

__version__ = "0.1.0"
