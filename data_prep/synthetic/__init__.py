"""The embedded default: a procedural driving world written in the exact nuScenes format.

Modules, one job each:
  config     what a dataset contains (schema, conditions, validation)   taxonomy  nuScenes vocabularies
  meshes     triangle meshes with per-triangle semantics                 materials procedural textures, LiDAR reflectance
  props      object meshes (vehicles, people, furniture)                 layouts   roads and traffic of the three layouts
  motion     the ego's drive and moving agents                           scene     one seeded scene in the global frame
  sensors    camera and LiDAR rig, timing                                render    ray casting (G-buffers, LiDAR sweeps)
  shading    lights, shadows, sky, camera response                       weather   conditions as physics (camera and LiDAR)
  writer     tables and files on disk                                    generate  orchestration
Command line: tools/make_synthetic.py. Description: docs/data.md. The demo and the ASVP study get a
world through ``data_prep.world.SyntheticWorldBuilder`` (the library's ``WorldBuilder``).
"""
