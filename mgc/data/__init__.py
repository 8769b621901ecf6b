"""Data layer: datasets on disk, GTZAN, bad-audio scan, splits, feature cache, loaders."""
