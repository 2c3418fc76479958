"""Dataset preparation: nuScenes info files and the synthetic nuScenes-format world."""
