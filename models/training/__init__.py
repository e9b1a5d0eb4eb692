"""Training the LaMP family: `demos` (demonstration files in LIBERO's HDF5 layout), `scene_flow` (scene-flow labels
from simulator state or ICP), `dataset` (samples, statistics and collation for the trainer), and the trainer itself:
`config` (TrainConfig), `setup` (model, data and stages of a run), `steps` (losses, augmentation, schedule),
`state` (resumable state), `metrics` (metrics.csv, TensorBoard) and `loop` (`train`, the entry point).

Nothing is imported here, so that reading demonstrations (`demos`) does not pull in torch."""
