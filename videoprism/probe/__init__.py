"""Train probes and classifiers on frozen VideoPrism features (`videoprism probe`).

`train_probe` reads a labelled video set, caches the frozen encoder's features, trains a head and writes a
`VideoPrismForVideoClassification` folder; `evaluate_probe` and `classify_with_probe` run such a folder on videos.
"""

_API = {
    "train_probe": "api",
    "evaluate_probe": "api",
    "classify_with_probe": "api",
    "ProbeRun": "api",
    "ProbeSettings": "train",
    "ProbeResult": "train",
    "fit_head": "train",
}


def __getattr__(name: str):
    # The pipeline pulls in the decoding machinery: import it on first use.
    if name in _API:
        import importlib

        return getattr(importlib.import_module(f".{_API[name]}", __name__), name)
    raise AttributeError(f"module 'videoprism.probe' has no attribute {name!r}")


__all__ = sorted(_API)
