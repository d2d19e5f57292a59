"""`python -m node_exporter_ml`: the same as the `node-exporter-ml` console script."""

from node_exporter_ml.cli import main

raise SystemExit(main())
