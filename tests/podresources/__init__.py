"""Tests of the kubelet pod-resources client, parser, join and collector."""
