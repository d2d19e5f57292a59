"""This node's Kubernetes pods: their metadata and the serving targets they declare.

Imports point one way, from the pure model to the network:

    pods.py       PodMeta, the parse_* helpers, annotation targets, KubeData (pure)
    store.py      PodStore: one node's pods from a full list and watch events (pure)
    source.py     PodSource: authenticated GETs, TLS, health, the retry loop
    apiserver.py  ApiServerSource: list + watch of the API server
    kubelet.py    KubeletSource: the kubelet's /pods, polled

collectors/kube.py chooses a source from the flags and publishes the store's KubeData.
"""
