"""Data: info-file datasets, degradations, joint 2D/3D transforms, voxelisation, collate."""
