"""The chart tests' fixtures: an apiserver with every CRD an example may hold (both mailtrain.dev kinds,
kopf's peering kinds, the Prometheus Operator's), and namespaces that enforce Pod Security
"restricted"."""

from tests.chart.conftest import chart_crds, restricted_namespaces

__all__ = ["chart_crds", "restricted_namespaces"]
