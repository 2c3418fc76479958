"""The nuScenes vocabulary: the releases, the 32 lidarseg categories and the 16-class evaluation mapping.

``CATEGORIES`` lists the 32 categories; a category's position is its official ``index`` (the value in
the uint8 ``lidarseg/*.bin`` label files). ``COARSE_CLASSES`` and ``FINE_TO_COARSE`` are the 16-class
(+ ``ignore``) mapping of the lidarseg benchmark, as in the devkit's
``nuscenes.eval.lidarseg.utils.LidarsegClassMapper``. Used by the probes, the teacher pre-training and
the synthetic world. The condition tags are in :mod:`collab_distill.data.conditions`.
"""
from __future__ import annotations

import numpy as np

#: The nuScenes releases, as named by the folder of their tables (``<dataroot>/v1.0-mini/scene.json``).
NUSCENES_VERSIONS: tuple[str, ...] = ("v1.0-trainval", "v1.0-mini", "v1.0-test")

#: (name, description) of the 32 lidarseg categories; the position is the official index.
CATEGORIES: tuple[tuple[str, str], ...] = (
    ("noise", "Any lidar return that does not correspond to a physical object, such as dust, vapor, "
              "noise, fog, raindrops, smoke and reflections."),
    ("animal", "All animals, e.g. cats, rats, dogs, deer, birds."),
    ("human.pedestrian.adult", "Adult subcategory."),
    ("human.pedestrian.child", "Child subcategory."),
    ("human.pedestrian.construction_worker", "Construction worker."),
    ("human.pedestrian.personal_mobility", "A small electric or self-propelled vehicle, e.g. skateboard, "
                                           "segway, or scooters, on which the person typically travels."),
    ("human.pedestrian.police_officer", "Police officer."),
    ("human.pedestrian.stroller", "Strollers."),
    ("human.pedestrian.wheelchair", "Wheelchairs."),
    ("movable_object.barrier", "Temporary road barrier placed in the scene in order to redirect traffic."),
    ("movable_object.debris", "Movable object that is left on the driveable surface."),
    ("movable_object.pushable_pullable", "Objects that a pedestrian may push or pull, e.g. trash bins."),
    ("movable_object.trafficcone", "All types of traffic cone."),
    ("static_object.bicycle_rack", "Area or device intended to park or secure the bicycles in a row."),
    ("vehicle.bicycle", "Human or electric powered 2-wheeled vehicle designed to travel at lower speeds."),
    ("vehicle.bus.bendy", "Bendy bus subcategory."),
    ("vehicle.bus.rigid", "Rigid bus subcategory."),
    ("vehicle.car", "Vehicle designed primarily for personal use, e.g. sedans, hatch-backs, SUVs."),
    ("vehicle.construction", "Vehicles primarily designed for construction."),
    ("vehicle.emergency.ambulance", "All types of ambulances."),
    ("vehicle.emergency.police", "All types of police vehicles."),
    ("vehicle.motorcycle", "Gasoline or electric powered 2-wheeled vehicle designed to move rapidly."),
    ("vehicle.trailer", "Any vehicle trailer, both for trucks, cars and bikes."),
    ("vehicle.truck", "Vehicles primarily designed to haul cargo including pick-ups, lorries, trucks."),
    ("flat.driveable_surface", "All paved or unpaved surfaces that a car can drive on."),
    ("flat.other", "All other forms of horizontal ground-level structures that do not belong to any of "
                   "driveable_surface, curb, sidewalk and terrain, e.g. traffic islands."),
    ("flat.sidewalk", "Sidewalk, pedestrian walkways, bike paths, etc. Part of the ground designated for "
                      "pedestrians or cyclists."),
    ("flat.terrain", "Natural horizontal surfaces such as ground level horizontal vegetation (< 20 cm tall), "
                     "grass, rolling hills, soil, sand and gravel."),
    ("static.manmade", "Includes man-made structures but not limited to: buildings, walls, guard rails, "
                       "fences, poles, drainages, hydrants, flags, banners, street signs."),
    ("static.other", "Points in the background that are not distinguishable, or objects that do not match "
                     "any of the above labels."),
    ("static.vegetation", "Any vegetation in the frame that is higher than the ground, including bushes, "
                          "plants, potted plants, trees, etc."),
    ("vehicle.ego", "The vehicle on which the sensors are mounted, that are sometimes visible at the "
                    "bottom of the image."),
)
CATEGORY_NAMES: tuple[str, ...] = tuple(name for name, _ in CATEGORIES)
NAME_TO_INDEX: dict[str, int] = {name: i for i, name in enumerate(CATEGORY_NAMES)}
NOISE = NAME_TO_INDEX["noise"]

#: The lidarseg benchmark classes; position = coarse index, 0 is ``ignore``.
COARSE_CLASSES: tuple[str, ...] = (
    "ignore", "barrier", "bicycle", "bus", "car", "construction_vehicle", "motorcycle", "pedestrian",
    "traffic_cone", "trailer", "truck", "driveable_surface", "other_flat", "sidewalk", "terrain", "manmade",
    "vegetation")
#: Coarse index of the ``ignore`` class (unlabelled, noise and the classes the benchmark leaves out).
COARSE_IGNORE = COARSE_CLASSES.index("ignore")
#: The 16 lidarseg evaluation classes; evaluation label ``i`` is coarse class ``i + 1``.
LIDARSEG_CLASSES: tuple[str, ...] = COARSE_CLASSES[1:]
#: Evaluation label of pixels and points without one of the 16 classes (unlabelled, noise, ignore).
IGNORE = 255

#: Fine category name -> coarse class name (the benchmark's mapping).
FINE_TO_COARSE: dict[str, str] = {
    "noise": "ignore", "animal": "ignore",
    "human.pedestrian.adult": "pedestrian", "human.pedestrian.child": "pedestrian",
    "human.pedestrian.construction_worker": "pedestrian", "human.pedestrian.personal_mobility": "ignore",
    "human.pedestrian.police_officer": "pedestrian", "human.pedestrian.stroller": "ignore",
    "human.pedestrian.wheelchair": "ignore",
    "movable_object.barrier": "barrier", "movable_object.debris": "ignore",
    "movable_object.pushable_pullable": "ignore", "movable_object.trafficcone": "traffic_cone",
    "static_object.bicycle_rack": "ignore",
    "vehicle.bicycle": "bicycle", "vehicle.bus.bendy": "bus", "vehicle.bus.rigid": "bus", "vehicle.car": "car",
    "vehicle.construction": "construction_vehicle", "vehicle.emergency.ambulance": "ignore",
    "vehicle.emergency.police": "ignore", "vehicle.motorcycle": "motorcycle", "vehicle.trailer": "trailer",
    "vehicle.truck": "truck",
    "flat.driveable_surface": "driveable_surface", "flat.other": "other_flat", "flat.sidewalk": "sidewalk",
    "flat.terrain": "terrain", "static.manmade": "manmade", "static.other": "ignore",
    "static.vegetation": "vegetation", "vehicle.ego": "ignore",
}


def fine_to_coarse_lut() -> np.ndarray:
    """``(32,)`` uint8 lookup table: fine lidarseg index -> coarse (16-class + ignore) index."""
    coarse_index = {name: i for i, name in enumerate(COARSE_CLASSES)}
    return np.array([coarse_index[FINE_TO_COARSE[name]] for name in CATEGORY_NAMES], dtype=np.uint8)


def fine_to_eval_lut() -> np.ndarray:
    """``(32,)`` int64 lookup table: fine lidarseg index -> evaluation label 0..15
    (:data:`LIDARSEG_CLASSES`), or :data:`IGNORE` for the coarse ``ignore`` class."""
    coarse = fine_to_coarse_lut().astype(np.int64)
    return np.where(coarse == COARSE_IGNORE, IGNORE, coarse - 1)
