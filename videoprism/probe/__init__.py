"""Train probes and classifiers on frozen VideoPrism features (`videoprism probe`)."""
