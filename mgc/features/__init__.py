"""Signal processing: log-mel, SpecAugment, windowing, and the one front end (audio → model input)."""
