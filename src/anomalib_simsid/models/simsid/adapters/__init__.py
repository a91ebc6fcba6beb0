"""anomalib adapters: pre/post-processing, visualizer, timer, predictions, export, checkpoints."""
