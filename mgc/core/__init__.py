"""The ground floor: typed config, errors, audio decoding, atomic writes, Ray start-up, device."""
