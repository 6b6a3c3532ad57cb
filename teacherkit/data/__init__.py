"""COCO datasets: typed loading (:mod:`.coco`), masks (:mod:`.masks`), inspection
(:mod:`.inspect`), validation and repair (:mod:`.validate`, :mod:`.fix`), splits
(:mod:`.split`) and their CLI commands (:mod:`.commands`). Modules are imported on use;
this package imports nothing."""
